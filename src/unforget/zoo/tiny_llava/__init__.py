"""tiny-llava's recipe: the config (:mod:`.config`), the CLIP stage (:mod:`.clip`), the build that trains the rest
(:mod:`.recipe`), the build-time accuracy check (:mod:`.check`) and the model card (:mod:`.card`). The committed
model and its registration live in :mod:`unforget.models.zoo`."""
