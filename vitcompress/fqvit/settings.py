"""FQ-ViT's step keys (``fq_vit`` steps), their defaults and ranges."""
from __future__ import annotations

from dataclasses import dataclass

from vitcompress.fqvit.observers import OBSERVERS
from vitcompress.settings import Settings, setting


@dataclass(frozen=True, kw_only=True)
class FQViTSettings(Settings):
    weight_bits: int = setting(8, low=2, high=8, help="weights are stored as int8")
    act_bits: int = setting(8, low=2, high=8, help="activations are uint8 levels")
    attn_bits: int = setting(4, low=1, high=8, help="the log2 (LIS) levels of attention probabilities")
    observer: str = setting("minmax", choices=OBSERVERS, help="how calibration sets each activation range")
    calib_images: int = setting(1000, low=1, help="training images the observers see", counts="train")
    calib_batch_size: int = setting(100, low=1, help="calibration images a forward pass")
    ptf: bool = setting(True, help="Power-of-Two Factor on every tensor that feeds a LayerNorm")
    lis: bool = setting(True, help="Log-Int-Softmax; without it a calibrated act_bits uniform quantizer")
    ptf_k: int = setting(3, low=0, high=8, help="PTF factors 2^0..2^K")
    percentile: float = setting(99.99, low=50, low_open=True, high=100, help="the percentile observer's clip")
    ema: float = setting(0.9, low=0, high=1, high_open=True, help="the EMA observer's decay")

    def spec(self) -> dict:
        """What an artifact records to rebuild the quantized graph (calibration counts excluded)."""
        skip = ("calib_images", "calib_batch_size")
        return {"method": "fq_vit", **{k: v for k, v in self.as_dict().items() if k not in skip}}
