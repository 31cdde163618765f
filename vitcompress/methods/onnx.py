"""``onnx``: export the chain's PyTorch model to ONNX, run it in ONNX Runtime, and prove it is the same model.

The export (torch.export-based, dynamic batch; :func:`vitcompress.runtimes.onnxruntime.export`) ends a
PyTorch chain: vanilla, DeiT, pruned, Nyström and the QAT rows (their dequantized float weights) all
export; torch.ao's int8 layers (``dynamic_ptq``) and FQ-ViT's simulated quantization do not, and the
configuration says so before any job runs. The step then predicts the whole test split with both PyTorch
and ONNX Runtime and refuses the export when they agree on fewer than ``min_agreement`` of the images
(default 99.5%; :class:`~vitcompress.methods.base.Conversion`). The artifact is the ``.onnx`` file itself;
its accuracy cell is measured by ONNX Runtime, its speed by ONNX Runtime beside PyTorch's vanilla.
"""
from __future__ import annotations

from vitcompress.methods.base import Conversion, register
from vitcompress.runtimes.onnxruntime import RUNTIME


@register
class OnnxExport(Conversion):
    name = "onnx"
    family = "ONNX Runtime"
    runtime = RUNTIME
