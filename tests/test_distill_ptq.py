import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vitcompress.artifacts import Artifact
from vitcompress.config import ConfigError, resolve
from vitcompress.data import InputAdapter, PreparedData, prepare
from vitcompress.methods import build_model
from vitcompress.methods.distill import (
    DistillationLoss,
    TeacherCache,
    _DistilledTraining,
    init_from_teacher,
    make_student,
)
from vitcompress.methods.dynamic_ptq import int8_skeleton, quantize
from vitcompress.models import arch_for, create
from vitcompress.preflight import preflight

META = {"num_classes": 10, "channels": 1, "size": [8, 8]}
STUDENT = {"timm": "deit_tiny_distilled_patch16_224", "kwargs": {"patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 1}}
TEACHER = {"timm": "vit_small_patch16_224", "kwargs": {"patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2}}


class PermutedTeacher(nn.Module):
    """A 'teacher' that is always sure of (label + 3) mod 10: its answers differ from every label."""

    def __init__(self, labels_of):
        super().__init__()
        self.labels_of = labels_of

    def forward(self, x):
        return 10.0 * F.one_hot((self.labels_of(x) + 3) % 10, 10).float()


def test_hard_loss_is_half_labels_on_class_head_half_teacher_on_distillation_head():
    torch.manual_seed(0)
    cls_out, dist_out = torch.randn(6, 10), torch.randn(6, 10)
    teacher_logits, y = torch.randn(6, 10), torch.randint(0, 10, (6,))
    loss = DistillationLoss(nn.Identity(), "hard")
    expected = 0.5 * F.cross_entropy(cls_out, y) + 0.5 * F.cross_entropy(dist_out, teacher_logits.argmax(-1))
    assert loss.loss((cls_out, dist_out), teacher_logits, y) == pytest.approx(expected.item())
    labels_only = F.cross_entropy(cls_out, y)
    assert loss.loss((cls_out, dist_out), teacher_logits, y) != pytest.approx(labels_only.item())
    # the distillation head is trained on the teacher, not the labels: it alone moves with the teacher
    moved = loss.loss((cls_out, dist_out), teacher_logits.roll(1, 0), y)
    assert moved != pytest.approx(expected.item())


@pytest.mark.parametrize("augment,scale", [({"shift": 1}, 2), ({"shift": 1, "hflip": True}, 1)])
def test_cached_teacher_logits_are_the_teachers_on_every_augmented_batch(digits_file, augment, scale):
    """The cache holds the teacher's answer for each augmentation of each training image: every batch the
    loop draws is found in it (bilinear upsampling included), and the answers are the teacher's own."""
    torch.manual_seed(0)
    data = PreparedData(digits_file)
    arch = arch_for(TEACHER, META, "native", scale)
    teacher = create(arch).eval()
    adapter = InputAdapter(data.meta, arch["kwargs"]["img_size"])
    loss = DistillationLoss(teacher, "hard")
    cache = TeacherCache.build(loss, data.splits["train"][0], augment, adapter)
    assert len(TeacherCache.variants(augment)) == (18 if augment.get("hflip") else 9)
    loader = data.loader("train", 64, train=True, augment=augment, seed=3)
    for i, (x, _) in enumerate(loader):
        x = adapter(x)
        cached = cache.lookup(x)
        assert cached is not None
        assert torch.allclose(cached, teacher(x), atol=1e-5)
        if i == 3:
            break
    assert cache.lookup(adapter(torch.zeros(2, 1, 8, 8, dtype=torch.uint8) + 7)) is None  # not a training image
    assert (cache.hits, cache.misses) == (4, 1)
    assert TeacherCache.worth_it({"shift": 1}, 18) and not TeacherCache.worth_it({"shift": 4, "hflip": True}, 3)


def test_soft_loss_is_deits_formula_on_hand_computed_logits():
    """DeiT's soft loss: (1-λ)·CE + λ·τ²·KL(teacher ‖ student) summed and divided by the number of logits."""
    import math

    cls_out = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    dist_out = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.0, 2.0]])
    t_out = torch.tensor([[0.0, 2.0, 0.0], [4.0, 0.0, 0.0]])
    y = torch.tensor([0, 1])
    lam, tau = 0.3, 2.0

    def softmax(row):
        e = [math.exp(v / tau) for v in row]
        return [v / sum(e) for v in e]

    kl_sum = sum(pt * (math.log(pt) - math.log(ps))
                 for s_row, t_row in zip(dist_out.tolist(), t_out.tolist())
                 for ps, pt in zip(softmax(s_row), softmax(t_row)))
    ce = sum(-math.log(math.exp(r[c]) / sum(math.exp(v) for v in r)) for r, c in zip(cls_out.tolist(), y.tolist())) / 2
    expected = (1 - lam) * ce + lam * tau ** 2 * kl_sum / 6  # 2 images x 3 classes
    loss = DistillationLoss(nn.Identity(), "soft", lam=lam, tau=tau)
    assert loss.loss((cls_out, dist_out), t_out, y).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(TypeError, match="distillation logits"):
        loss.loss(cls_out, t_out, y)


def test_a_distilled_student_evaluated_after_fit_averages_its_two_heads(digits_file):
    """After fit() (whose validation switches distilled training off and on), the model evaluate() sees
    returns the mean of the class and distillation heads, as DeiT's inference does."""
    from vitcompress.train import fit

    torch.manual_seed(0)
    data = PreparedData(digits_file)
    student = make_student(arch_for(STUDENT, data.meta))
    adapter = InputAdapter(data.meta, [8, 8])
    loss = DistillationLoss(create(arch_for(TEACHER, data.meta)).eval(), "hard")
    _DistilledTraining(student)
    fit(student, data, {"epochs": 1, "batch_size": 64, "lr": 0.001, "max_steps": 2, "num_workers": 0}, adapter,
        "cpu", 0, loss_fn=loss)
    del student.train
    student.set_distilled_training(False)
    student.eval()
    x = adapter(data.splits["test"][0][:8])
    with torch.no_grad():
        feats = student.forward_features(x)
        averaged = (student.head(feats[:, 0]) + student.head_dist(feats[:, 1])) / 2
        out = student(x)
    assert not isinstance(out, tuple) and torch.allclose(out, averaged, atol=1e-6)
    assert not torch.allclose(student.head(feats[:, 0]), averaged, atol=1e-4)  # the heads do differ


def test_a_few_steps_teach_the_distillation_head_the_teachers_answers(tmp_path):
    torch.set_num_threads(1)
    prepare({"source": "digits"}, tmp_path / "d.pt")
    data = PreparedData(tmp_path / "d.pt")
    # Map each (normalised, shifted) image back to its label through a lookup of the training images.
    table = {}
    adapter = InputAdapter(data.meta, [8, 8])
    student = make_student(arch_for(STUDENT, data.meta))
    x_all, y_all = data.splits["train"]
    keys = adapter(x_all).flatten(1)
    for key, label in zip(keys, y_all):
        table[key.numpy().tobytes()] = int(label)

    def labels_of(x):
        return torch.tensor([table.get(row.numpy().tobytes(), 0) for row in x.flatten(1)])

    teacher = PermutedTeacher(labels_of)
    loss = DistillationLoss(teacher, "hard")
    _DistilledTraining(student)
    student.train()
    opt = torch.optim.AdamW(student.parameters(), lr=0.005)
    torch.manual_seed(0)
    for step in range(150):
        idx = torch.randint(0, len(y_all), (64,))
        value = loss(student, adapter(x_all[idx]), y_all[idx])
        opt.zero_grad()
        value.backward()
        opt.step()
    student.train(False)
    with torch.no_grad():
        x = adapter(x_all[:400])
        feats = student.forward_features(x)
        cls_pred = student.head(feats[:, 0]).argmax(-1)
        dist_pred = student.head_dist(feats[:, 1]).argmax(-1)
    y = y_all[:400]
    teacher_says = (y + 3) % 10
    assert (dist_pred == teacher_says).float().mean() > 0.5   # the distillation head follows the teacher
    assert (cls_pred == y).float().mean() > 0.5               # the class head follows the labels
    assert (dist_pred == y).float().mean() < 0.2


def test_student_must_have_a_distillation_token():
    with pytest.raises(ValueError, match="no distillation token"):
        make_student(arch_for(TEACHER, META))


@pytest.mark.parametrize("key,value,message", [
    ("loss", "medium", r"steps.deit_base.loss = 'medium'"),
    ("teacher", "vit+nope", r"steps.deit_base.teacher = 'vit\+nope'"),
    ("init", "imagenet", r"steps.deit_base.init = 'imagenet': use one of scratch, teacher"),
    ("teacher", "vit+dynamic_ptq", r"a chain of one `train` step\), not 'vit\+dynamic_ptq'"),
])
def test_distill_settings_are_checked(raw_params, key, value, message):
    raw = copy.deepcopy(raw_params)
    raw["profiles"]["demo"]["steps"]["deit_base"][key] = value
    with pytest.raises(ConfigError, match=message):
        resolve(raw)


def test_a_student_of_another_shape_than_its_teacher_is_refused_before_any_job(raw_params):
    raw = copy.deepcopy(raw_params)
    raw["profiles"]["demo"]["steps"]["deit_tiny"]["init"] = "teacher"  # 24 wide, the teacher 64
    with pytest.raises(ConfigError, match=r"steps.deit_tiny \(data set digits\): init: teacher: the teacher's "
                                          r"\S+ has shape .*needs the teacher's embed_dim"):
        preflight(resolve(raw))


POOLED = {"timm": "vit_small_patch16_224", "kwargs": {"patch_size": 4, "embed_dim": 16, "depth": 2, "num_heads": 2,
                                                     "global_pool": "avg", "class_token": False}}
BASE_STUDENT = {"timm": "deit_base_distilled_patch16_224",
                "kwargs": {"patch_size": 4, "embed_dim": 16, "depth": 2, "num_heads": 2}}


def test_a_student_initialised_from_its_teacher_computes_the_teachers_features():
    """init: teacher copies the encoder: on the patch tokens alone the student's blocks and norm compute the
    teacher's features, and both heads the teacher's logits; the class and distillation tokens stay new."""
    torch.manual_seed(0)
    teacher = create(arch_for(POOLED, META, "native", 2)).eval()
    student = make_student(arch_for(BASE_STUDENT, META, "native", 2)).eval()
    tokens_before = student.cls_token.clone()
    x = torch.randn(3, 1, 16, 16)
    assert init_from_teacher(student, teacher) == len(teacher.state_dict()) + 2  # the head goes to both heads
    with torch.no_grad():
        features = teacher.fc_norm(teacher.forward_features(x))
        mine = student.norm(student.blocks(student.patch_embed(x) + student.pos_embed[:, 2:]))
        assert torch.allclose(mine, features, atol=1e-6)
        logits, pooled = teacher(x), student.blocks(student.patch_embed(x) + student.pos_embed[:, 2:]).mean(1)
        assert torch.allclose(student.head(student.norm(pooled)), logits, atol=1e-5)  # pool, norm, head
        assert torch.allclose(student.head_dist(student.norm(pooled)), logits, atol=1e-5)
    assert torch.equal(student.cls_token, tokens_before)


def test_the_distill_step_with_init_teacher_starts_from_the_teachers_weights(digits_file, tmp_path):
    """The step as a job runs it (run_step): with no epochs to train, the saved student is the teacher's
    encoder with new tokens, and its artifact records the initialisation."""
    from vitcompress.runtimes import load_artifact
    from vitcompress.workflow import run_step

    torch.manual_seed(1)
    meta = PreparedData(digits_file).meta
    teacher_arch = arch_for(POOLED, meta, "native", 2)
    teacher = create(teacher_arch)
    Artifact(teacher_arch, teacher.state_dict(), [], {"steps": [{"id": "vit", "method": "train"}]}).save(
        tmp_path / "teacher.pt")
    step = {"id": "deit_base", "method": "distill", "model": "deit_base", "teacher": "vit", "init": "teacher",
            "model_cfg": BASE_STUDENT, "image_size": "native", "image_scale": 2,
            "train": {"epochs": 0, "batch_size": 64, "lr": 0.001}}
    run_step(step, "digits", str(digits_file), str(tmp_path / "student.pt"), device="cpu",
             extra={"teacher": str(tmp_path / "teacher.pt")})
    student = load_artifact(tmp_path / "student.pt")
    assert student.meta["steps"][-1]["init"] == "teacher"
    mine, theirs = student.state_dict, teacher.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in theirs.items() if k.startswith(("blocks.", "patch_embed.")))
    assert torch.equal(mine["pos_embed"][:, 2:], theirs["pos_embed"])


def test_init_from_a_teacher_of_another_shape_is_refused():
    teacher = create(arch_for(POOLED, META, "native", 2))
    wide = {**BASE_STUDENT, "kwargs": {**BASE_STUDENT["kwargs"], "embed_dim": 32}}
    with pytest.raises(ValueError, match=r"teacher's .* has shape .*embed_dim, depth and patch size"):
        init_from_teacher(make_student(arch_for(wide, META, "native", 2)), teacher)


@pytest.mark.parametrize("meta", [{"steps": [{"id": "q", "method": "dynamic_ptq"}], "cpu_only": True},
                                  {"steps": [{"id": "fq", "method": "fq_vit"}], "simulated": True}])
def test_dynamic_ptq_refuses_an_int8_or_simulated_parent(tmp_path, meta):
    """Outside the workflow too (whose config check stops such a chain first): torch.ao would find no
    nn.Linear left to quantize and pass the model on unchanged, labelled int8."""
    from pathlib import Path

    from vitcompress.methods import StepContext, get_method

    parent = Artifact(arch_for(TEACHER, META), create(arch_for(TEACHER, META)).state_dict(), [], meta)
    ctx = StepContext(step={"id": "again", "method": "dynamic_ptq"}, dataset="digits", data_file=Path("unused"),
                      device="cpu", parent=parent)
    with pytest.raises(ValueError, match=r"'again' \(dynamic_ptq\) needs a float model"):
        get_method("dynamic_ptq")().execute(ctx)


def test_dynamic_ptq_is_int8_smaller_close_and_reloads_without_requantizing(tmp_path):
    arch = arch_for({**TEACHER, "kwargs": {**TEACHER["kwargs"], "embed_dim": 64}}, META)
    model = create(arch).eval()
    q = quantize(copy.deepcopy(model))
    x = torch.randn(8, 1, 8, 8)
    assert (q(x) - model(x)).abs().max() < 0.1
    Artifact(arch, model.state_dict()).save(tmp_path / "f.pt")
    Artifact(arch, q.state_dict(), [{"method": "dynamic_ptq", "dtype": "qint8"}], {"cpu_only": True}).save(tmp_path / "q.pt")
    assert (tmp_path / "q.pt").stat().st_size < 0.45 * (tmp_path / "f.pt").stat().st_size
    loaded = Artifact.load(tmp_path / "q.pt")
    assert loaded.meta["cpu_only"]
    rebuilt = build_model(loaded)
    assert torch.equal(rebuilt(x), q(x))
    assert rebuilt.blocks[0].attn.qkv.weight().dtype == torch.qint8
    skeleton = int8_skeleton(create(arch))
    assert not any(type(m) is nn.Linear for m in skeleton.modules())
    # the dynamic Linears' unused output scale/zero point are left out of the file, and put back on load
    unused = [k for k in q.state_dict() if k.endswith((".scale", ".zero_point"))]
    assert unused == [] and not [k for k in rebuilt.state_dict() if k.endswith((".scale", ".zero_point"))]
    assert rebuilt.blocks[0].attn.qkv.scale == 1.0 and rebuilt.blocks[0].attn.qkv.zero_point == 0
    plain = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
    full = plain.state_dict()
    assert "blocks.0.attn.qkv.scale" in full and len(full) > len(q.state_dict())
    skeleton.load_state_dict(full)  # a file written with them still loads
    assert torch.equal(skeleton(x), q(x))
