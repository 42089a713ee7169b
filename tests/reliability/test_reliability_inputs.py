"""Guarantees 3, 5 (pickle) and 6: bad inputs stop with an error naming what and where (or are converted where
that is lossless and documented), pickle is refused without the explicit flag, and training stops on an exploding
gradient with the last good checkpoint kept. Loader-level refusals (malformed JSONL/CSV, missing columns, labels
outside the class list, truncated IDX / CIFAR files) are tested in tests/unit/test_formats.py."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from tests.finetune_helpers import build_tiny_llava
from unforget.cli import main
from unforget.data.types import MAX_IMAGE_PIXELS, load_image
from unforget.errors import BadSampleError, ModelLoadError, TrainingError
from unforget.models.config import ModelConfig
from unforget.runs import read_jsonl
from unforget.training import FinetuneConfig, TrainDataConfig, finetune, load_finetuned


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/finetune_fixtures.py


# ------------------------------------------------------------------------------------------------ images

def _image(mode: str) -> Image.Image:
    rgb = Image.fromarray(np.arange(12 * 10 * 3, dtype=np.uint8).reshape(12, 10, 3))
    if mode == "I;16":
        return Image.fromarray(np.arange(120, dtype=np.uint16).reshape(12, 10) * 500)
    if mode == "P+transparency":
        img = rgb.convert("P")
        img.info["transparency"] = 0
        return img
    return rgb.convert(mode)


@pytest.mark.parametrize("mode,fmt", [("CMYK", "JPEG"), ("CMYK", "TIFF"), ("I;16", "PNG"), ("P", "PNG"),
                                      ("P+transparency", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"), ("L", "PNG"),
                                      ("1", "PNG"), ("I", "TIFF"), ("F", "TIFF")])
def test_every_image_mode_loads_as_8_bit_rgb_of_the_same_size(tmp_path, mode, fmt):
    path = tmp_path / f"image.{fmt.lower()}"
    img = _image(mode)
    img.save(path, fmt, **({"transparency": 0} if mode == "P+transparency" else {}))
    loaded = load_image(path, what="sample s1")
    assert loaded.mode == "RGB" and loaded.size == (10, 12)
    assert np.asarray(loaded).dtype == np.uint8


def test_sixteen_bit_grey_is_rescaled_not_clipped(tmp_path):
    Image.fromarray(np.array([[0, 65535]], dtype=np.uint16)).save(tmp_path / "g.png")
    assert np.asarray(load_image(tmp_path / "g.png", what="s"))[0, :, 0].tolist() == [0, 255]


def test_alpha_is_composited_on_white(tmp_path):
    Image.new("RGBA", (2, 2), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    assert np.asarray(load_image(tmp_path / "clear.png", what="s")).tolist()[0][0] == [255, 255, 255]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (and holds a 1x1 body): what a decompression bomb shows
    before anything is decoded."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = data[12:29]  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    side = int(MAX_IMAGE_PIXELS ** 0.5) + 1
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(side, side))
    with pytest.raises(BadSampleError, match=rf"sample bomb-1.*{side}x{side}.*pixel limit.*resize"):
        load_image(path, what="sample bomb-1")
    assert path.stat().st_size < 200  # refused from its header: nothing was decompressed


@pytest.mark.parametrize("content,message", [(b"", r"empty \(0 bytes\)"), (b"\x89PNG\r\n\x1a\n", "unreadable image"),
                                             (b"GIF89a" + b"\x00" * 5, "unreadable image"),
                                             (b"not an image at all", "unreadable image")])
def test_zero_byte_truncated_and_foreign_files_name_the_sample_and_the_file(tmp_path, content, message):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(BadSampleError, match=message) as err:
        load_image(path, what="sample ds/7")
    assert "sample ds/7" in str(err.value) and err.value.path == str(path)


def test_a_truncated_jpeg_is_refused_not_half_decoded(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadSampleError, match="cut.jpg.*unreadable image.*--skip-bad"):
        load_image(tmp_path / "cut.jpg", what="sample s")


# ------------------------------------------------------------------------------------------------ checkpoints

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny LLaVAs of different widths (hidden 32 vs 48 in the language model) and a projector run on the first."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    root = tmp_path_factory.mktemp("models")
    build_tiny_llava(root / "base")
    AutoProcessor.from_pretrained(root / "base").save_pretrained(root / "wide")
    config = LlavaForConditionalGeneration.from_pretrained(root / "base").config
    config.text_config.hidden_size = 48
    wide = LlavaForConditionalGeneration(config)
    wide.save_pretrained(root / "wide")
    return root


def _config(model, out, **overrides):
    values = dict(model=ModelConfig(name=str(model), device="cpu"), data=TrainDataConfig(datasets=["ft-colours"]),
                  method="projector", lr=1e-3, epochs=1, batch_size=4, out=str(out))
    values.update(overrides)
    return FinetuneConfig(**values)


def test_projector_checkpoint_of_the_wrong_shape_names_the_tensor(models, tmp_path):
    from safetensors.torch import load_file, save_file

    result = finetune(_config(models / "base", tmp_path / "ft", max_steps=1))
    ckpt = result.final_checkpoint
    tensors = load_file(f"{ckpt}/projector.safetensors")
    name = next(iter(tensors))
    tensors[name] = torch.zeros(tensors[name].shape[0] + 1, *tensors[name].shape[1:])
    save_file(tensors, f"{ckpt}/projector.safetensors")
    with pytest.raises(ModelLoadError, match=rf"'{name}' has shape \({tensors[name].shape[0]}[,)]"):
        load_finetuned(ckpt, device="cpu")
    with pytest.raises(ModelLoadError, match=r"\(64, 64\), the model \(48, 64\).*another base model"):
        load_finetuned(ckpt, base=str(models / "wide"), device="cpu")  # another base: other projector sizes


def test_lora_adapter_of_another_base_is_refused_naming_both(models, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import LlavaForConditionalGeneration

    from unforget.models.loading import load_model
    from unforget.tailoring import open_checkpoint

    wide = LlavaForConditionalGeneration.from_pretrained(models / "wide")
    get_peft_model(wide, LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).save_pretrained(tmp_path / "adapter")
    with pytest.raises(ModelLoadError, match="adapter does not fit this model"):
        load_model(str(models / "base"), device="cpu", adapter=str(tmp_path / "adapter"))
    with pytest.raises(ModelLoadError, match="shape"):
        open_checkpoint(tmp_path / "adapter", base=open_checkpoint(models / "base"))


def test_tailor_refuses_a_finetuned_model_of_another_architecture(models, tmp_path, capsys):
    rc = main(["tailor", "--base", str(models / "base"), "--finetuned", str(models / "wide"), "--method", "average",
               "--format", "patch", "--out", str(tmp_path / "out")])
    assert rc == 2
    text = " ".join(capsys.readouterr().out.split())
    assert "has shape" in text and "but the base has" in text
    assert not (tmp_path / "out" / "patch.safetensors").exists()


def test_pickle_weights_need_the_explicit_flag(models, tmp_path, capsys):
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save(load_file(str(models / "base" / "model.safetensors")), pickled / "pytorch_model.bin")
    args = ["tailor", "--base", str(models / "base"), "--finetuned", str(pickled), "--method", "average",
            "--format", "patch"]
    assert main([*args, "--out", str(tmp_path / "refused")]) == 2
    assert "allow_pickle" in " ".join(capsys.readouterr().out.split()).replace("--allow-pickle", "allow_pickle")
    assert main([*args, "--allow-pickle", "--out", str(tmp_path / "allowed")]) == 0
    assert main(["eval", "--model", str(pickled), "--datasets", "ft-colours", "--out", str(tmp_path / "e")]) == 2


# ------------------------------------------------------------------------------------------------ training

def test_exploding_gradient_stops_training_and_keeps_the_last_good_checkpoint(models, tmp_path):
    """The loss stays finite; the gradient overflows at step 4 (epoch 2). 12 samples, batch 4: 3 steps an epoch."""
    from unforget.models.loading import load_model

    lm = load_model(str(models / "base"), device="cpu")
    backwards = {"n": 0}

    def blow_up(grad):
        backwards["n"] += 1
        return grad * float("inf") if backwards["n"] >= 4 else grad

    next(p for n, p in lm.model.named_parameters() if "multi_modal_projector" in n).register_hook(blow_up)
    out = tmp_path / "boom"
    with pytest.raises(TrainingError, match=r"gradient norm is (inf|nan) at step 4 \(epoch 2\)") as err:
        finetune(_config(models / "base", out, epochs=2), lm=lm)
    assert "epoch-1" in str(err.value)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-1"]
    good = load_finetuned(out / "checkpoints" / "epoch-1", device="cpu")
    assert all(torch.isfinite(p).all() for p in good.model.parameters())
    assert [r["step"] for r in read_jsonl(out / "train_log.jsonl")] == [1, 2, 3]
