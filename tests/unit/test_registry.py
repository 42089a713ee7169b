"""The registry: name -> object with did-you-mean; members found by scanning their package's folder; name and
description given once, by the object. Adding a judge, fine-tuning method, tailoring method, dataset format or study
is one new file (or folder): each is proved here by a throwaway member written to a temporary folder that is added
to the package's ``__path__`` (never into src/), found by name and listed by `unforget ls`."""

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

from unforget.cli import main
from unforget.cli.ls import REGISTRIES
from unforget.errors import RegistryError
from unforget.registry import Registry, package_modules


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


class Named:
    def __init__(self, name: str, description: str = ""):
        self.name, self.description = name, description


def test_an_object_gives_its_own_name_and_description_once():
    reg: Registry = Registry("method")
    lora = reg.register(Named("lora", "low-rank adapters"))
    assert reg.get("lora") is lora and reg.entry("lora").description == "low-rank adapters"
    with pytest.raises(RegistryError, match="'full' is registered as 'partial'"):
        reg.register("partial", Named("full", "all weights"))
    with pytest.raises(RegistryError, match="described twice"):
        reg.register(Named("partial", "top blocks"), description="the top blocks")
    with pytest.raises(RegistryError, match="must carry one"):
        reg.register(lambda: None)
    reg.register("full", Named("full", "all weights"))  # the same name twice cannot differ: accepted
    assert reg.entry("full").description == "all weights"


def test_a_scan_imports_public_modules_and_subpackages_only(tmp_path, monkeypatch):
    (tmp_path / "scanpkg" / "sub").mkdir(parents=True)
    (tmp_path / "scanpkg" / "_private").mkdir()
    for rel in ("__init__.py", "one.py", "_hidden.py", "sub/__init__.py", "sub/two.py", "_private/__init__.py",
                "_private/three.py"):
        (tmp_path / "scanpkg" / rel).write_text("")
    (tmp_path / "scanpkg" / "not_a_package").mkdir()  # a folder without __init__.py is no module
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert list(package_modules("scanpkg")) == ["scanpkg.one", "scanpkg.sub", "scanpkg.sub.two"]
    finally:
        for name in [m for m in sys.modules if m == "scanpkg" or m.startswith("scanpkg.")]:
            del sys.modules[name]


# One throwaway member per kind: (registry in `unforget ls`, its package, the new file (or folder/__init__.py),
# its source, the member's name). Each file is all that adding the member takes.
THROWAWAYS = {
    "judge": ("judges", "unforget.evaluation.judges", "throwaway_judge.py", '''
        from unforget.evaluation.judges.base import JUDGES, Verdict


        class ThrowawayJudge:
            name = "throwaway-judge"
            description = "a judge that exists only in a test"

            def identity(self):
                return {"name": self.name}

            def judge(self, items):
                return [Verdict(prediction=None, correct=None, judge=self.name) for _ in items]

            def stats(self):
                return {}

            def close(self):
                pass


        JUDGES.register(ThrowawayJudge)
        ''', "throwaway-judge"),
    "fine-tuning method": ("methods", "unforget.training.methods", "throwaway_method.py", '''
        from dataclasses import dataclass

        from unforget.training.methods.base import METHODS, FinetuneMethod, TrainedParts


        @dataclass
        class Options:
            scale: float = 1.0


        METHODS.register(FinetuneMethod(
            "throwaway-method", Options, prepare=lambda model, options: model, save=lambda *a, **k: None,
            load=lambda model, folder: None, default_lr=1e-4,
            trained_parts=lambda options: TrainedParts(("projector",)),
            description="a fine-tuning method that exists only in a test",
        ))
        ''', "throwaway-method"),
    "tailoring method": ("tailoring", "unforget.tailoring", "throwaway_tailoring.py", '''
        from dataclasses import dataclass

        from unforget.tailoring.base import TAILORING_METHODS, MethodOutput, TailoringMethod


        @dataclass
        class Config:
            alpha: float = 0.5


        TAILORING_METHODS.register(TailoringMethod(
            "throwaway-tailoring", Config, lambda job, config: MethodOutput(patches=[]),
            description="a tailoring method that exists only in a test",
        ))
        ''', "throwaway-tailoring"),
    "dataset format": ("formats", "unforget.data.formats", "throwaway_format.py", '''
        from unforget.data.formats._common import register_format
        from unforget.data.types import ImageDataset


        @register_format("throwaway-format", description="a format that exists only in a test", source="nowhere")
        def load_throwaway(path, n=1):
            return ImageDataset("throwaway", "classification", {"test": []}, class_names=["a"], templates=["{classes}"])
        ''', "throwaway-format"),
    "study": ("studies", "unforget.studies", "throwaway_study/__init__.py", '''
        from dataclasses import dataclass

        from unforget.studies.base import STUDIES, Study


        @dataclass
        class ThrowawayConfig:
            name: str = "throwaway"


        STUDIES.register(Study("throwaway-study", ThrowawayConfig, lambda config, progress=None: None,
                               "a study that exists only in a test"))
        ''', "throwaway-study"),
}


@pytest.mark.parametrize("kind", list(THROWAWAYS))
def test_adding_a_member_is_one_new_file(kind, tmp_path, monkeypatch, capsys):
    listing, package, relative, source, name = THROWAWAYS[kind]
    registry = REGISTRIES[listing].registry()
    assert name not in registry
    file = tmp_path / relative
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(textwrap.dedent(source))
    module = f"{package}.{Path(relative).parts[0].removesuffix('.py')}"
    pkg = importlib.import_module(package)
    monkeypatch.setattr(pkg, "__path__", [*pkg.__path__, str(tmp_path)])
    try:
        registry.rescan()  # in a fresh process the first lookup scans; this one has looked things up already
        entry = registry.entry(name)
        assert module in sys.modules  # found by the scan, imported from the temporary folder
        assert entry.description.endswith("exists only in a test")
        monkeypatch.setenv("COLUMNS", "250")  # rich would otherwise truncate names in narrow captured output
        assert main(["ls", listing]) == 0
        assert name in capsys.readouterr().out
    finally:
        registry.unregister(name)
        for loaded in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
            del sys.modules[loaded]
    assert name not in registry


def test_the_throwaway_judge_and_format_work_by_name(tmp_path, monkeypatch):
    """Found by name is usable by name: the judge is built as any judge is, the format loads as FORMAT:PATH."""
    from unforget.data import FORMATS, load_dataset
    from unforget.evaluation.judges.base import JUDGES, JudgeItem, build_judges

    for kind, registry in (("judge", JUDGES), ("dataset format", FORMATS)):
        _, package, relative, source, _ = THROWAWAYS[kind]
        folder = tmp_path / package  # one folder per package: each scan sees only its own throwaway
        folder.mkdir()
        (folder / relative).write_text(textwrap.dedent(source))
        pkg = importlib.import_module(package)
        monkeypatch.setattr(pkg, "__path__", [*pkg.__path__, str(folder)])
    try:
        JUDGES.rescan()
        FORMATS.rescan()
        (judge,) = build_judges(["throwaway-judge"])
        assert judge.judge([JudgeItem("q", "a", "a")])[0].judge == "throwaway-judge"
        assert load_dataset(f"throwaway-format:{tmp_path}").name == f"throwaway-format:{tmp_path}"
    finally:
        JUDGES.unregister("throwaway-judge")
        FORMATS.unregister("throwaway-format")
        for module in ("unforget.evaluation.judges.throwaway_judge", "unforget.data.formats.throwaway_format"):
            sys.modules.pop(module, None)


@pytest.mark.parametrize("listing", list(REGISTRIES))
def test_every_entry_has_one_description(listing):
    """Each entry's name and description are its object's own where the object carries them (given once, so they
    cannot differ), and every entry says what it is."""
    registry = REGISTRIES[listing].registry()
    assert registry.names(), f"`unforget ls {listing}` lists nothing"
    for entry in registry.entries():
        assert entry.description.strip(), f"{registry.kind} '{entry.name}' has no description"
        own_name, own_description = getattr(entry.obj, "name", None), getattr(entry.obj, "description", None)
        if isinstance(own_name, str):
            assert own_name == entry.name
        if isinstance(own_description, str):
            assert own_description == entry.description
