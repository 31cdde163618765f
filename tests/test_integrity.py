"""Every file the pipeline writes and reads back proves its integrity: two bytes flipped in the middle of
one (its modification time kept, as a copy from a backup or a shared cache keeps it) are refused on read
with one line naming the file, that it changed since it was written, and how to regenerate it."""
import json
import os
from pathlib import Path

import pytest
import torch

from vitcompress.artifacts import Artifact
from vitcompress.data import PreparedData, prepare
from vitcompress.errors import IntegrityError
from vitcompress.io import content_digest, read_json, write_json
from vitcompress.methods import StepContext, get_method
from vitcompress.runtimes import load_artifact

CHANGED = r"this .* changed since it was written .*; delete it and re-run the workflow to regenerate it\.$"


def _flip(path: Path, at: int) -> None:
    """Two bytes at ``at`` inverted, the file's times kept."""
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    data[at + 1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == st.st_mtime_ns


def _inside(path: Path, needle: bytes) -> int:
    """The offset of the middle of ``needle`` in the file (a tensor's bytes: the payload, not the container)."""
    at = path.read_bytes().find(needle)
    assert at >= 0
    return at + len(needle) // 2


def _refused(load, path) -> str:
    with pytest.raises(IntegrityError, match=CHANGED) as err:
        load(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    return message


@pytest.fixture(scope="module")
def saved(random_vit, digits_file, tmp_path_factory):
    """One file of every kind the pipeline writes: a PyTorch artifact, an ONNX file, an OpenVINO IR."""
    tmp = tmp_path_factory.mktemp("integrity")
    random_vit.save(tmp / "vit.pt")
    parent = load_artifact(tmp / "vit.pt")

    def ctx(step):
        return StepContext(step=step, dataset="digits", data_file=Path(digits_file), device="cpu", parent=parent)

    get_method("onnx")().run(ctx({"id": "onnx", "method": "onnx"})).save(tmp / "model.onnx")
    get_method("ov")().run(ctx({"id": "ov", "method": "ov"})).save(tmp / "ir" / "model.xml")
    return tmp


def _largest_tensor_bytes(art) -> bytes:
    t = max(art.state_dict.values(), key=lambda t: t.numel())
    return t.contiguous().numpy().tobytes()


def test_a_pytorch_artifact_altered_on_disk_is_refused(saved, tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes((saved / "vit.pt").read_bytes())
    load_artifact(path)  # intact: loads
    _flip(path, _inside(path, _largest_tensor_bytes(Artifact.load(path))))
    _refused(load_artifact, path)


def test_an_onnx_file_altered_on_disk_is_refused(saved, tmp_path):
    import onnx

    path = tmp_path / "model.onnx"
    path.write_bytes((saved / "model.onnx").read_bytes())
    load_artifact(path)
    weights = max(onnx.load(str(path)).graph.initializer, key=lambda t: len(t.raw_data)).raw_data
    _flip(path, _inside(path, weights))
    _refused(load_artifact, path)


@pytest.mark.parametrize("which", ["xml", "bin"])
def test_an_openvino_ir_altered_on_disk_is_refused(saved, tmp_path, which):
    for suffix in (".xml", ".bin"):
        (tmp_path / f"model{suffix}").write_bytes((saved / "ir" / f"model{suffix}").read_bytes())
    path = tmp_path / "model.xml"
    load_artifact(path)
    target = path.with_suffix(f".{which}")
    at = target.read_bytes().find(b"<layers>") + 40 if which == "xml" else target.stat().st_size // 2
    _flip(target, at)
    _refused(load_artifact, path)


def test_a_prepared_data_file_altered_on_disk_is_refused(tmp_path):
    path = tmp_path / "digits.pt"
    prepare({"source": "digits"}, path)
    data = PreparedData(path)
    _flip(path, _inside(path, data.splits["train"][0].numpy().tobytes()))
    _refused(PreparedData, path)


def test_a_metrics_json_altered_on_disk_is_refused(tmp_path):
    path = tmp_path / "accuracy.json"
    write_json(path, {"accuracy": 97.5, "per_image": {"n": 3, "top1": "Bw=="}})
    assert read_json(path) == {"accuracy": 97.5, "per_image": {"n": 3, "top1": "Bw=="}}  # the digest is not data
    text = path.read_text()
    st = os.stat(path)
    path.write_text(text.replace("97.5", "99.5"))  # two characters: still valid JSON, another number
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    _refused(read_json, path)
    path.write_text(json.dumps({"accuracy": 97.5}))  # by hand: no digest at all
    with pytest.raises(IntegrityError, match="records no content digest"):
        read_json(path)


def test_a_step_refuses_an_altered_parent_before_doing_anything(saved, digits_file, tmp_path):
    """The fault as found: dynamic_ptq quantized whatever the flipped bytes of its parent said."""
    from vitcompress.workflow import run_step

    parent = tmp_path / "vit" / "model.pt"
    parent.parent.mkdir()
    parent.write_bytes((saved / "vit.pt").read_bytes())
    _flip(parent, _inside(parent, _largest_tensor_bytes(Artifact.load(parent))))
    out = tmp_path / "vit+dynamic_ptq" / "model.pt"
    with pytest.raises(IntegrityError, match=CHANGED):
        run_step(step={"id": "dynamic_ptq", "method": "dynamic_ptq"}, dataset="digits", data_file=str(digits_file),
                 out=str(out), accuracy_out=str(out.with_name("accuracy.json")), parent=str(parent))
    assert not out.parent.exists() or not any(out.parent.iterdir())  # nothing written


def test_the_digest_sees_every_part_of_what_a_file_holds():
    base = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "meta": {"a": 1, "b": [1.5, "x"]}}
    d = content_digest(base)
    assert d == content_digest({"meta": {"b": [1.5, "x"], "a": 1}, "w": base["w"].clone()})  # order-free, by value
    for other in ({**base, "w": base["w"].reshape(3, 2)}, {**base, "w": base["w"].double()},
                  {**base, "meta": {"a": 2, "b": [1.5, "x"]}}, {**base, "meta": {"a": 1, "b": ["x", 1.5]}},
                  {**base, "extra": None}):
        assert content_digest(other) != d
    q = torch.quantize_per_tensor(torch.randn(4, 4), 0.1, 0, torch.qint8)
    q2 = torch.quantize_per_tensor(q.dequantize(), 0.2, 0, torch.qint8)
    assert content_digest(q) != content_digest(q2)  # a quantized tensor's scale is part of it


def test_files_other_tools_read_stay_as_they_are(tmp_path):
    write_json(tmp_path / "m.json", {"accuracy": 1.0}, seal_it=False)  # e.g. DVC's per-cell metrics
    assert json.loads((tmp_path / "m.json").read_text()) == {"accuracy": 1.0}


def test_written_files_get_the_umask_mode_not_0600(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask
