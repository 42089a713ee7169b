import pytest

from unforget.errors import RegistryError
from unforget.registry import Registry


def test_register_get_and_did_you_mean():
    reg: Registry = Registry("judge")

    @reg.register("embedding", description="cosine")
    class Emb:
        pass

    reg.register("exact", int)
    assert reg.get("embedding") is Emb
    assert reg.names() == ["embedding", "exact"]
    assert reg.entry("embedding").description == "cosine"
    with pytest.raises(RegistryError, match="unknown judge 'embeding'. Did you mean 'embedding'"):
        reg.get("embeding")


def test_double_registration_is_refused():
    reg: Registry = Registry("method")
    reg.register("lora", int)
    with pytest.raises(RegistryError, match="registered twice"):
        reg.register("lora", float)
