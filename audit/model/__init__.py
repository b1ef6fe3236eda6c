"""Model adapters: wrap any trained network once, so every plugin sees the same thing.

One module per adapter family, re-exported here (``from audit.model import load_model, TorchModelAdapter``):

- ``base``: ``ModelAdapter`` (the interface plugins use) and ``Bounds``;
- ``outputs``: tuple/dict outputs, logits vs. probabilities, a single binary score (``SelectOutput``), and the
  probe that checks a model's outputs on the data;
- ``torch_adapter``: ``TorchModelAdapter`` (``from_module`` wraps a network in memory), ``AdaptedNetwork``,
  ``Normalize``;
- ``loading``: TorchScript, factory + weights (torch.save or safetensors), and the hashes the manifest records;
- ``blackbox``: ``PredictFunctionAdapter`` (a predict function, no gradients);
- ``onnx_adapter``: ``OnnxModelAdapter`` (onnxruntime, no gradients);
- ``text``: ``TextTokenizer`` and ``TextModelAdapter`` (token ids + attention mask); ``text_load``: the tokenizer and
  text model a config describes (``model.huggingface``, ``model.factory`` + ``model.tokenizer``), checked together;
- ``load``: ``load_model``, the adapter a config describes.

Device resolution (``resolve_device``) lives in ``audit.device`` and is re-exported here.
"""

from audit.device import resolve_device
from audit.model.base import Bounds, ModelAdapter
from audit.model.blackbox import PredictFunctionAdapter
from audit.model.load import load_model
from audit.model.loading import file_sha256, import_object, state_sha256
from audit.model.onnx_adapter import OnnxModelAdapter
from audit.model.outputs import SelectOutput, select_output
from audit.model.torch_adapter import AdaptedNetwork, Normalize, TorchModelAdapter

__all__ = [
    "AdaptedNetwork",
    "Bounds",
    "ModelAdapter",
    "Normalize",
    "OnnxModelAdapter",
    "PredictFunctionAdapter",
    "SelectOutput",
    "TorchModelAdapter",
    "file_sha256",
    "import_object",
    "load_model",
    "resolve_device",
    "select_output",
    "state_sha256",
]
