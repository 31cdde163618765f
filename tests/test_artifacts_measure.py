import os

import pytest
import torch
import torch.nn as nn

from vitcompress.artifacts import Artifact, ArtifactError
from vitcompress.io import atomic_path, read_json, write_json
from vitcompress.measure import MB, best_of_rounds, evaluate, file_size_mb, fingerprint, speed
from vitcompress.methods import build_model
from vitcompress.models import arch_for, create

ARCH = arch_for({"timm": "vit_small_patch16_224",
                 "kwargs": {"patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2}},
                {"num_classes": 3, "channels": 1, "size": [8, 8]})


def test_artifact_round_trip_gives_identical_predictions(tmp_path):
    model = create(ARCH).eval()
    Artifact(ARCH, model.state_dict(), meta={"note": "x"}).save(tmp_path / "m.pt")
    loaded = Artifact.load(tmp_path / "m.pt")
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(build_model(loaded)(x), model(x))
    assert loaded.meta == {"note": "x"}
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    write_json(target, {"a": 1})
    assert read_json(target) == {"a": 1}


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/vitcompress-pwned",))


def test_a_checkpoint_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "vitcompress.artifact/1", "payload": _Evil()}, path)
    with pytest.raises(ArtifactError, match="refused to load"):
        Artifact.load(path)
    assert not os.path.exists("/tmp/vitcompress-pwned")


@pytest.mark.parametrize("compress", ["none", "zlib", "xz"])
def test_compressed_artifacts_reload_the_same_weights(tmp_path, compress):
    state = create(ARCH).state_dict()
    Artifact(ARCH, state, meta={"compress": compress}).save(tmp_path / "m.pt")
    loaded = Artifact.load(tmp_path / "m.pt")
    assert loaded.meta["compress"] == compress and state.keys() == loaded.state_dict.keys()
    assert all(torch.equal(state[k], loaded.state_dict[k]) for k in state)
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        Artifact.load(tmp_path / "cut.pt")


def test_truncated_and_foreign_checkpoints_are_clear_errors(tmp_path):
    Artifact(ARCH, create(ARCH).state_dict()).save(tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        Artifact.load(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ArtifactError, match="not a vitcompress artifact"):
        Artifact.load(tmp_path / "other.pt")
    with pytest.raises(ArtifactError, match="no such artifact"):
        Artifact.load(tmp_path / "missing.pt")


def test_evaluate_counts_top1_and_top5():
    # The "model" returns its input as logits, so every rank is chosen by the test.
    logits = torch.zeros(10, 20)
    labels = torch.arange(10)
    logits[torch.arange(10), labels] = 5.0            # right at rank 1 ...
    for i, rank_of_label in ((0, 3), (1, 5), (2, 6)):  # ... except three images
        logits[i] = torch.arange(20, 0, -1).float()    # class k has rank k + 1
        labels[i] = rank_of_label - 1
    loader = [(logits[:6], labels[:6]), (logits[6:], labels[6:])]
    out = evaluate(nn.Identity(), loader, lambda t: t)
    assert out == {"top1": 70.0, "top5": 90.0, "n": 10}
    assert evaluate(nn.Identity(), [(logits[:, :10], labels)], lambda t: t) == {"top1": 70.0, "n": 10}


def test_speed_reports_median_spread_and_units():
    model = create(ARCH)
    out = speed(model, [1, 8, 8], batch_size=4, device="cpu", threads=1, warmup=1, repeats=5, rounds=3)
    assert out["repeats"] == 5 and out["rounds"] == 3 and out["threads"] == 1
    assert out["batch"]["min_s"] <= out["batch"]["median_s"] <= out["batch"]["max_s"]
    assert len(out["batch"]["round_medians_s"]) == 3
    assert out["batch"]["best_s"] == min(out["batch"]["round_medians_s"])
    assert out["it_per_s"] == pytest.approx(1 / out["batch"]["best_s"])
    assert out["images_per_s"] == pytest.approx(4 * out["it_per_s"])
    assert out["latency_ms"] == pytest.approx(1000 * out["batch1"]["best_s"])
    with pytest.raises(ValueError, match="rounds = 0"):
        speed(model, [1, 8, 8], batch_size=4, rounds=0)


def test_speed_up_against_a_baseline_is_timed_round_by_round():
    torch.manual_seed(0)
    light = nn.Sequential(nn.Flatten(), nn.Linear(64, 8))
    heavy = nn.Sequential(nn.Flatten(), nn.Linear(64, 2048), nn.ReLU(), *[m for _ in range(4) for m in
                          (nn.Linear(2048, 2048), nn.ReLU())], nn.Linear(2048, 8))  # ~500x the work
    out = speed(light, [1, 8, 8], batch_size=16, threads=1, warmup=1, repeats=5, rounds=3, baseline=heavy)
    assert len(out["batch"]["round_medians_s"]) == 3 and out["vs_baseline_iqr"] >= 0
    assert out["vs_baseline"] > 5 and out["baseline_it_per_s"] < out["it_per_s"]
    lo, hi = out["vs_baseline_ci"]  # the bootstrap interval of the median ratio
    assert lo <= out["vs_baseline"] <= hi
    assert "vs_baseline" not in speed(light, [1, 8, 8], batch_size=16, threads=1, warmup=1, repeats=5)


def test_best_of_rounds_ignores_a_stalled_round():
    stalled, clean = [0.5, 0.6, 0.5], [0.1, 0.12, 0.11]
    out = best_of_rounds([stalled, clean])
    assert out["best_s"] == 0.11 and out["round_medians_s"] == [0.5, 0.11]
    assert out["max_s"] == 0.6 and out["min_s"] == 0.1


def test_size_is_the_file_on_disk(tmp_path):
    (tmp_path / "f").write_bytes(b"\0" * (3 * MB))
    assert file_size_mb(tmp_path / "f") == 3.0


def test_fingerprint_names_the_hardware_and_software():
    fp = fingerprint(2)
    assert fp["cpu_threads"] == 2 and fp["torch"] == torch.__version__
    assert {"cpu", "gpu", "timm", "cpu_count"} <= set(fp)


def test_timing_threads_never_exceed_the_cpus_available():
    from vitcompress.measure import available_cpus, effective_threads

    assert effective_threads(10_000) == available_cpus()
    assert effective_threads(1) == 1
    assert fingerprint(10_000)["cpu_threads"] == available_cpus()


def test_architecture_benchmark_times_each_row_beside_the_baseline_row(tmp_path):
    from vitcompress.workflow import bench_row

    measure = {"batch_size": 4, "cpu_threads": 1, "warmup": 1, "repeats": 3, "gpu": False}
    vit, int8 = {"id": "vit", "method": "train"}, {"id": "q", "method": "dynamic_ptq"}
    wide = {**ARCH, "kwargs": {**ARCH["kwargs"], "embed_dim": 256, "num_heads": 4, "depth": 4}}
    bench_row([vit, int8], ARCH, measure, {}, tmp_path / "q.json", baseline_steps=[vit], baseline_arch=wide)
    bench_row([vit], ARCH, measure, {}, tmp_path / "v.json", baseline_steps=[vit], baseline_arch=ARCH)
    q, v = read_json(tmp_path / "q.json"), read_json(tmp_path / "v.json")
    # the 16-wide int8 row beside a 256-wide, 4-deep baseline: far faster, measured in the same job
    assert q["cpu"]["vs_baseline"] > 2 and q["cpu"]["baseline_it_per_s"] < q["cpu"]["it_per_s"]
    assert v["cpu"]["vs_baseline"] == 1.0 and "baseline_it_per_s" not in v["cpu"]  # not timed beside itself
    assert q["chain"] == ["vit", "q"] and q["size_mb"] < v["size_mb"]
