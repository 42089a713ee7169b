"""docs/scaling.md matches the commands: every unforget verb it launches exists and parses, every accelerate
config and study config it names is shipped, and the launcher flags it uses are accelerate's / torchrun's."""

import re
import shlex
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"
ROOT = DOC.parents[1]


def commands() -> list[list[str]]:
    blocks = re.findall(r"```\n(.*?)```", DOC.read_text(), flags=re.S)
    joined = [line for b in blocks for line in b.replace("\\\n", " ").splitlines()
              if line.strip() and not line.lstrip().startswith("#")]
    env = {"$NODE_RANK": "0", "$MASTER_ADDR": "10.0.0.1"}  # what the scheduler fills in
    return [shlex.split(re.sub(r"\$[A-Z_]+", lambda m: env[m.group(0)], line)) for line in joined]


def test_the_tailor_section_cites_recorded_benchmark_files():
    text = DOC.read_text()
    section = text.split("## Model Tailor at 7B", 1)[1]
    cited = re.findall(r"bench/results/[\w.-]+\.json", section)
    assert cited, "the Model Tailor section names no recorded benchmark"
    root = DOC.parents[1]
    for path in cited:
        assert (root / path).is_file(), f"{path} is cited in docs/scaling.md but not recorded"


@pytest.mark.parametrize("argv", commands(), ids=lambda a: " ".join(a[:6]))
def test_documented_command_parses(argv):
    from unforget.cli import build_parser
    from unforget.config import find_config

    if argv[0] == "accelerate":
        from accelerate.commands.launch import launch_command_parser

        split = argv.index("-m")
        launcher = launch_command_parser().parse_args(argv[2:split] + ["--", "x"])  # flags are accelerate's
        assert (ROOT / launcher.config_file).is_file()
        tool = argv[split + 2:]
    elif argv[0] == "torchrun":
        from torch.distributed.run import get_args_parser

        split = argv.index("-m")
        get_args_parser().parse_args(argv[1:split] + ["x"])
        tool = argv[split + 2:]
    else:
        assert argv[0] == "unforget"
        tool = argv[1:]
    args = build_parser().parse_args(tool)
    config = getattr(args, "config", None)
    if config and not config.startswith("my-"):
        assert find_config(config).is_file()
