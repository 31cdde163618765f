"""FQ-ViT (Lin et al., 2022) as a simulation: quantizers, quantized modules, ablation. The workflow step is
:mod:`vitcompress.methods.fq_vit`."""
