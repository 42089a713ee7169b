"""smol-llava's recipe: the config (:mod:`.config`), stage 0 (:mod:`.vocabulary`), the stages that train through
the language model and the build with ``--retrain`` (:mod:`.recipe`), and the model card (:mod:`.card`). The
committed trained parts, the parts' conversion and the assembly live in :mod:`unforget.models.zoo`."""
