"""Every loss against its paper's formula on a tiny example, plus the behaviour all losses share.

The reference values here are written out from the formulas with plain
torch / math, never with lossbench's own helpers.
"""

import math

import pytest
import torch

from lossbench.errors import UserError
from lossbench.losses import LOSSES, build_loss
from lossbench.losses.combine import DeepSupervision

pytestmark = pytest.mark.filterwarnings("ignore:loss ce. float targets")  # ce's BCE fallback says so; tested apart

COUNTS = [60, 25, 5]

# (spec, modes it takes). Modes: "cls" N x C with N indices, "mc" N x C x H x W with index masks,
# "bin" N x 1 x H x W with a 0/1 float mask, "ml" N x C x H x W with float multi-label targets.
ALL = ("cls", "mc", "bin", "ml")
INDEX = ("cls", "mc")
CASES = [
    ("ce", ALL),
    ("bce", ALL),
    ("focal(gamma=2)", ALL),
    ("focal(gamma=2, alpha=[0.25, 1, 2])", ("cls", "mc", "ml")),
    ("focal(gamma=2, sigmoid=true)", INDEX),
    ("focal(gamma=2, alpha=[0.25, 1, 2], sigmoid=true)", INDEX),
    ("dice", ALL),
    ("dice(squared=true, per_image=true)", ("mc", "bin", "ml")),
    ("dsc", ALL),
    ("dsc(alpha=0.3)", ALL),
    ("generalized_dice", ALL),
    ("generalized_dice(per_image=false, weight_type=simple)", ("mc", "bin", "ml")),
    ("jaccard", ALL),
    ("tversky", ALL),
    ("focal_tversky", ALL),
    ("lovasz_hinge", ("bin", "ml")),
    ("lovasz_hinge(per_image=false)", ("bin", "ml")),
    ("lovasz_softmax", INDEX),
    ("lovasz_softmax(per_image=true)", ("mc",)),
    ("bce_dice", ALL),
    ("focal_dice", ALL),
    ("cb", INDEX),
    ("cb(base='ce')", INDEX),
    ("cb(base='focal', gamma=2)", INDEX),
    ("ldam(s=1)", INDEX),
    ("ldam(s=1, weight=[1, 2, 3])", INDEX),
    ("logit_adjusted", INDEX),
    ("balanced_softmax", INDEX),
]
PARAMS = [pytest.param(spec, mode, id=f"{spec}-{mode}") for spec, modes in CASES for mode in modes]


def test_every_registered_loss_is_exercised():
    tested = {spec.split("(")[0] for spec, _ in CASES}
    assert tested == set(LOSSES)


def make(spec, mode, c=3):
    task = "classification" if mode == "cls" else "segmentation"
    return build_loss(spec, 1 if mode == "bin" else c, task, COUNTS[:c] if mode != "bin" else None)


def example(mode, seed=0, n=2, c=3, size=4):
    """Random logits and a target for a mode."""
    g = torch.Generator().manual_seed(seed)
    if mode == "cls":
        return torch.randn(6, c, generator=g), torch.tensor([0, 1, 2, 0, 1, 0])[:6] % c
    if mode == "mc":
        return torch.randn(n, c, size, size, generator=g), torch.randint(0, c, (n, size, size), generator=g)
    ch = 1 if mode == "bin" else c
    return torch.randn(n, ch, size, size, generator=g), torch.randint(0, 2, (n, ch, size, size), generator=g).float()


def one_hot_like(logits, target, mode):
    """+1 / -1 per channel: where the target is (index targets) or where it is 1 (float targets)."""
    if mode in INDEX:
        oh = torch.nn.functional.one_hot(target.long(), logits.shape[1]).movedim(-1, 1).float()
    else:
        oh = target.float()
    return 2 * oh - 1


# ---------------------------------------------------------------------------------------------------------------------
# Shared behaviour


@pytest.mark.parametrize("spec, mode", PARAMS)
def test_perfect_prediction_gives_about_zero(spec, mode):
    if spec.startswith("dsc"):
        pytest.skip("dsc's (1-p)^alpha damps confident positives on purpose; see test_losses_official.py")
    logits, target = example(mode)
    value = make(spec, mode)(20 * one_hot_like(logits, target, mode), target)
    assert value.item() == pytest.approx(0, abs=2e-3)


@pytest.mark.parametrize("spec, mode", PARAMS)
def test_worse_prediction_gives_larger_loss(spec, mode):
    logits, target = example(mode)
    sign = one_hot_like(logits, target, mode)
    loss = make(spec, mode)
    good, bad = loss(1.5 * sign + 0.3 * logits, target), loss(-1.5 * sign + 0.3 * logits, target)
    assert bad.item() > good.item() + 1e-3


@pytest.mark.parametrize("spec, mode", PARAMS)
def test_gradients_are_finite_and_nonzero(spec, mode):
    logits, target = example(mode, seed=1)
    logits = (3 * logits).requires_grad_()
    value = make(spec, mode)(logits, target)
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value)
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("spec", ["focal(gamma=0.5)", "focal(gamma=0.5, sigmoid=true)", "cb(gamma=0.5)",
                                  "cb(base='sigmoid_focal', gamma=0.5)", "focal_tversky(gamma=0.5)", "dsc(alpha=0.5)"])
def test_fractional_exponents_keep_gradients_finite_at_a_perfect_prediction(spec):
    logits = torch.tensor([[30.0, -30.0, -30.0], [-30.0, 30.0, -30.0]], requires_grad=True)
    build_loss(spec, 3, class_counts=COUNTS)(logits, torch.tensor([0, 1])).backward()
    assert torch.isfinite(logits.grad).all()


def _ignore(target, mode):
    target = target.clone()
    if mode == "cls":
        target[[1, 4]] = 255
        return target, torch.tensor([False, True, False, False, True, False])
    if mode == "mc":
        target[0, :2, 1:3] = 255
        target[1, 3, 0] = 255
        return target, (target == 255).unsqueeze(1)
    target[0, :, :2, 1:3] = 255
    target[1, 0, 3, 0] = 255
    return target, target == 255


@pytest.mark.parametrize("spec, mode", PARAMS)
def test_ignored_entries_change_nothing(spec, mode):
    logits, target = example(mode, seed=2)
    target, ignored = _ignore(target, mode)
    loss = make(spec, mode)
    ignored = ignored.view(ignored.shape[0], *([1] * (logits.ndim - 1))) if mode == "cls" else ignored
    noise = torch.randn(logits.shape, generator=torch.Generator().manual_seed(5)) * 10 * ignored.expand_as(logits)
    a = logits.clone().requires_grad_()
    va = loss(a, target)
    va.backward()
    vb = loss(logits + noise, target)
    assert vb.item() == pytest.approx(va.item(), abs=1e-6)
    assert (a.grad * ignored.expand_as(logits)).abs().max() == 0


@pytest.mark.parametrize("spec, mode", PARAMS)
def test_a_fully_ignored_batch_gives_zero_not_nan(spec, mode):
    logits, target = example(mode, seed=6)
    logits.requires_grad_()
    value = make(spec, mode)(logits, torch.full_like(target, 255))
    value.backward()
    assert value.item() == pytest.approx(0, abs=1e-6)
    assert (logits.grad == 0).all()


@pytest.mark.parametrize("spec, mode", [p for p in PARAMS if p.values[1] == "cls"])
def test_ignored_samples_count_nowhere_in_classification(spec, mode):
    logits, target = example("cls", seed=3)
    target, ignored = _ignore(target, "cls")
    loss = make(spec, "cls")
    keep = ~ignored
    assert loss(logits, target).item() == pytest.approx(loss(logits[keep], target[keep]).item(), abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("spec, mode", PARAMS)
def test_half_precision_logits_do_not_overflow(spec, mode, dtype):
    logits, target = example(mode, seed=4)
    low = (40 * logits).to(dtype).requires_grad_()
    loss = make(spec, mode)
    value = loss(low, target)
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert torch.isfinite(low.grad).all()
    assert value.item() == pytest.approx(loss(low.detach().float(), target).item(), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("mode", ["mc", "bin"])
def test_any_spatial_rank(mode):
    logits, target = example(mode)
    spec = "dice + lovasz_softmax" if mode == "mc" else "dice + lovasz_hinge"
    flat = build_loss(spec, logits.shape[1], "segmentation")
    as3d = flat(logits.unsqueeze(-1), target.unsqueeze(-1))
    assert as3d.item() == pytest.approx(flat(logits, target).item(), abs=1e-6)


@pytest.mark.parametrize("spec, mode", [p for p in PARAMS if p.values[1] in ("mc", "bin")])
def test_an_n_1_h_w_integer_mask_reads_like_n_h_w(spec, mode):
    logits, target = example(mode)
    index = target if mode == "mc" else target[:, 0].long()
    loss = make(spec, mode)
    assert loss(logits, index.unsqueeze(1)).item() == pytest.approx(loss(logits, index).item(), abs=1e-6)


def test_one_channel_model_takes_an_index_mask():
    logits, target = example("bin")
    for spec in ("bce", "dice", "focal", "lovasz_hinge", "jaccard"):
        loss = build_loss(spec, 1, "segmentation")
        assert loss(logits, target[:, 0].long()).item() == pytest.approx(loss(logits, target).item(), abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# Formulas, written out


def softmax_rows(z):
    return [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in z]


def sig(v):
    return 1 / (1 + math.exp(-v))


Z = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 2.0, 0.0]]
Y = [0, 2, 1]


def test_ce_formula_with_weights_and_smoothing():
    p = softmax_rows(Z)
    w, eps = [0.5, 1.0, 3.0], 0.1
    q = [[(1 - eps) * (c == Y[i]) + eps / 3 for c in range(3)] for i in range(3)]
    per = [-sum(w[c] * q[i][c] * math.log(p[i][c]) for c in range(3)) for i in range(3)]
    expected = sum(per) / sum(w[y] for y in Y)
    got = build_loss("ce(weight=[0.5, 1, 3], label_smoothing=0.1)", 3)(torch.tensor(Z), torch.tensor(Y))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_balanced_and_effective_number_weights():
    counts = [10, 5, 1]
    p = softmax_rows(Z)
    nll = [-math.log(p[i][Y[i]]) for i in range(3)]
    balanced = [16 / (3 * n) for n in counts]
    beta = 0.9
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    effective = [3 * r / sum(raw) for r in raw]
    for spec, w in (("ce(weight=balanced)", balanced), ("ce(weight='effective(beta=0.9)')", effective)):
        expected = sum(w[y] * l for y, l in zip(Y, nll)) / sum(w[y] for y in Y)
        got = build_loss(spec, 3, class_counts=counts)(torch.tensor(Z), torch.tensor(Y))
        assert got.item() == pytest.approx(expected, rel=1e-5), spec


def test_bce_formula_with_smoothing_and_pos_weight():
    z, y = [1.5, -0.5, 0.2, -2.0], [1.0, 0.0, 1.0, 0.0]
    eps, pw = 0.2, 3.0
    ys = [t * (1 - eps) + eps / 2 for t in y]
    expected = sum(-(pw * t * math.log(sig(v)) + (1 - t) * math.log(1 - sig(v))) for v, t in zip(z, ys)) / 4
    got = build_loss("bce(label_smoothing=0.2, pos_weight=3)", 1, "segmentation")(
        torch.tensor(z).view(1, 1, 2, 2), torch.tensor(y).view(1, 1, 2, 2))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_focal_formula_per_sample_with_class_alpha():
    # class weights are sample weights with PyTorch's normalisation sum_i w_{y_i} l_i / sum_i w_{y_i}
    p = softmax_rows(Z)
    alpha = [0.25, 1.0, 2.0]
    terms = [-alpha[y] * (1 - p[i][y]) ** 2 * math.log(p[i][y]) for i, y in enumerate(Y)]
    expected = sum(terms) / sum(alpha[y] for y in Y)
    got = build_loss("focal(gamma=2, alpha=[0.25, 1, 2])", 3)(torch.tensor(Z), torch.tensor(Y))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_focal_is_per_sample_then_averaged_not_focal_factor_on_batch_mean_ce():
    z = torch.tensor([[4.0, 0.0], [0.0, 0.5], [-2.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    p = softmax_rows(z.tolist())
    per_sample = sum(-(1 - p[i][t]) ** 2 * math.log(p[i][t]) for i, t in enumerate(y.tolist())) / 3
    mean_ce = sum(-math.log(p[i][t]) for i, t in enumerate(y.tolist())) / 3
    batch_mean_mistake = (1 - math.exp(-mean_ce)) ** 2 * mean_ce
    assert abs(per_sample - batch_mean_mistake) > 0.05
    got = build_loss("focal(gamma=2)", 2)(z, y).item()
    assert got == pytest.approx(per_sample, rel=1e-5)
    assert got != pytest.approx(batch_mean_mistake, rel=1e-2)


def test_sigmoid_focal_formula_with_scalar_alpha():
    z, y = [1.5, -0.5, 0.2, -2.0], [1.0, 0.0, 1.0, 0.0]
    a, g = 0.25, 2.0
    terms = []
    for v, t in zip(z, y):
        pt = sig(v) if t == 1 else 1 - sig(v)
        at = a if t == 1 else 1 - a
        terms.append(-at * (1 - pt) ** g * math.log(pt))
    got = build_loss("focal(gamma=2, alpha=0.25)", 1, "segmentation")(
        torch.tensor(z).view(1, 1, 2, 2), torch.tensor(y).view(1, 1, 2, 2))
    assert got.item() == pytest.approx(sum(terms) / 4, rel=1e-5)


# A 2 x 2 image, 2 classes (plus a second image for per-image reductions).
SEG_Z = torch.tensor([[[[1.0, -0.5], [0.3, 2.0]], [[0.0, 0.5], [1.0, -1.0]]],
                      [[[-1.0, 0.2], [0.7, 0.1]], [[0.5, -0.3], [0.2, 1.5]]]])
SEG_Y = torch.tensor([[[0, 1], [1, 0]], [[1, 1], [0, 1]]])


def seg_counts(image_ids):
    """Soft TP, FP, FN and |P|, |Y| per class, written pixel by pixel."""
    out = []
    for c in range(2):
        tp = fp = fn = psum = ysum = psq = 0.0
        for n in image_ids:
            for i in range(2):
                for j in range(2):
                    zz = SEG_Z[n, :, i, j].tolist()
                    p = math.exp(zz[c]) / (math.exp(zz[0]) + math.exp(zz[1]))
                    y = 1.0 if SEG_Y[n, i, j] == c else 0.0
                    tp, fp, fn = tp + p * y, fp + p * (1 - y), fn + (1 - p) * y
                    psum, ysum, psq = psum + p, ysum + y, psq + p * p
        out.append(dict(tp=tp, fp=fp, fn=fn, psum=psum, ysum=ysum, psq=psq))
    return out


def seg(spec):
    return build_loss(spec, 2, "segmentation")(SEG_Z, SEG_Y).item()


def test_dice_formula_batch_squared_and_per_image():
    s = 1.0
    batch = seg_counts([0, 1])
    assert seg("dice") == pytest.approx(1 - sum((2 * k["tp"] + s) / (k["psum"] + k["ysum"] + s) for k in batch) / 2)
    sq = 1 - sum((2 * k["tp"] + s) / (k["psq"] + k["ysum"] + s) for k in batch) / 2
    assert seg("dice(squared=true)") == pytest.approx(sq)
    per = [1 - sum((2 * k["tp"] + s) / (k["psum"] + k["ysum"] + s) for k in seg_counts([n])) / 2 for n in (0, 1)]
    assert seg("dice(per_image=true)") == pytest.approx(sum(per) / 2)
    w = [1.0, 3.0]
    weighted = sum(wc * (1 - (2 * k["tp"] + s) / (k["psum"] + k["ysum"] + s)) for wc, k in zip(w, batch)) / 4
    assert seg("dice(weight=[1, 3])") == pytest.approx(weighted)


def test_dice_for_classification_runs_over_the_batch():
    p = softmax_rows(Z)
    dice = []
    for c in range(3):
        tp = sum(p[i][c] for i in range(3) if Y[i] == c)
        dice.append((2 * tp + 1) / (sum(p[i][c] for i in range(3)) + Y.count(c) + 1))
    linear = build_loss("dice(smooth=1, skip_empty=false, squared=false, log_loss=false)", 3)
    got = linear(torch.tensor(Z), torch.tensor(Y))
    assert got.item() == pytest.approx(1 - sum(dice) / 3)
    # classification defaults: smooth 0, squared sums (sum p^2 + sum y^2), a class absent from the batch (2 here)
    # adds 0 to the class mean
    y = [0, 0, 1]
    per_class = []
    for c in range(3):
        tp = sum(p[i][c] for i in range(3) if y[i] == c)
        per_class.append(1 - 2 * tp / (sum(p[i][c] ** 2 for i in range(3)) + y.count(c)) if c in y else 0.0)
    got = build_loss("dice(log_loss=false)", 3)(torch.tensor(Z), torch.tensor(y))
    assert got.item() == pytest.approx(sum(per_class) / 3)
    # and each present class costs -log Dice_c, not 1 - Dice_c (log_loss, the classification default)
    log_terms = [-math.log(1 - term) if c in y else 0.0 for c, term in enumerate(per_class)]
    got = build_loss("dice", 3)(torch.tensor(Z), torch.tensor(y))
    assert got.item() == pytest.approx(sum(log_terms) / 3)
    seg_dice = build_loss("dice", 3, "segmentation")
    assert (seg_dice.squared, seg_dice.log_loss) == (False, False)


def test_log_dice_keeps_the_gradient_of_a_collapsed_class_and_never_gives_nan():
    # 8 samples, class 2 has one sample and p ~ 2e-9 everywhere (logit -20): with -log Dice its logit gets
    # -(1 - p) / C from its only sample (d(-log 2p)/dz = -(1 - p), divided by the C = 3 classes of the mean)
    z = torch.zeros(8, 3)
    z[:, 2] = -20.0
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2])
    a = z.clone().requires_grad_()
    build_loss("dice", 3)(a, y).backward()
    assert a.grad[7, 2].item() == pytest.approx(-1 / 3, rel=1e-4)
    b = z.clone().requires_grad_()
    build_loss("dice(log_loss=false)", 3)(b, y).backward()
    assert abs(b.grad[7, 2].item()) < 1e-8
    # a class absent from the batch with p = 0 exactly (logit -200): finite loss, finite gradients, either way
    for spec in ("dice", "dice(skip_empty=false)", "dice(smooth=1, skip_empty=false)"):
        c = torch.zeros(4, 3)
        c[:, 2] = -200.0
        c.requires_grad_()
        loss = build_loss(spec, 3)(c, torch.tensor([0, 1, 0, 1]))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(c.grad).all(), spec


def test_jaccard_tversky_focal_tversky_formulas():
    k = seg_counts([0, 1])
    s = 1.0
    iou = [(c["tp"] + s) / (c["tp"] + c["fp"] + c["fn"] + s) for c in k]
    assert seg("jaccard") == pytest.approx(1 - sum(iou) / 2)
    ti = [(c["tp"] + s) / (c["tp"] + 0.2 * c["fp"] + 0.8 * c["fn"] + s) for c in k]
    assert seg("tversky(alpha=0.2, beta=0.8)") == pytest.approx(1 - sum(ti) / 2)
    assert seg("focal_tversky(alpha=0.2, beta=0.8, gamma=0.75)") == pytest.approx(sum((1 - t) ** 0.75 for t in ti) / 2)
    assert seg("tversky(alpha=0.5, beta=0.5, smooth=1)") == pytest.approx(seg("dice(smooth=2)"))
    assert seg("tversky(alpha=1, beta=1)") == pytest.approx(seg("jaccard"))


def lovasz_jaccard_reference(errors, fg):
    """Lovász extension of 1 - |Y minus M| / |Y union M| over prefixes M of the errors sorted decreasingly."""
    order = sorted(range(len(errors)), key=lambda k: -errors[k])
    gt = {k for k, f in enumerate(fg) if f}

    def jaccard_loss(m):
        return 1 - len(gt - m) / len(gt | m) if gt | m else 0.0

    total, prefix = 0.0, set()
    for k in order:
        before = jaccard_loss(prefix)
        prefix = prefix | {k}
        total += max(errors[k], 0.0) * (jaccard_loss(prefix) - before)
    return total


def test_lovasz_hinge_formula_per_image_and_per_batch():
    z = torch.tensor([[[[2.0, -0.5], [0.3, -1.5]]], [[[0.1, 0.4], [-2.0, 1.2]]]])
    y = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]], [[[1.0, 1.0], [0.0, 0.0]]]])
    errs = [[1 - v * (2 * t - 1) for v, t in zip(z[n].flatten().tolist(), y[n].flatten().tolist())] for n in range(2)]
    fgs = [y[n].flatten().tolist() for n in range(2)]
    per_image = sum(lovasz_jaccard_reference(e, f) for e, f in zip(errs, fgs)) / 2
    loss = build_loss("lovasz_hinge", 1, "segmentation")
    assert loss(z, y).item() == pytest.approx(per_image, rel=1e-5)
    batch = lovasz_jaccard_reference(errs[0] + errs[1], fgs[0] + fgs[1])
    assert build_loss("lovasz_hinge(per_image=false)", 1, "segmentation")(z, y).item() == pytest.approx(batch, rel=1e-5)


def test_lovasz_softmax_formula_present_classes_only():
    z = torch.tensor(Z + [[0.0, 1.0, 0.5]])
    y = torch.tensor([0, 0, 2, 2])
    p = softmax_rows(z.tolist())
    per_class = []
    for c in (0, 2):
        fg = [1.0 if t == c else 0.0 for t in y.tolist()]
        per_class.append(lovasz_jaccard_reference([abs(f - p[i][c]) for i, f in enumerate(fg)], fg))
    got = build_loss("lovasz_softmax", 3)(z, y).item()
    assert got == pytest.approx(sum(per_class) / 2, rel=1e-5)
    fg1 = [0.0] * 4
    all_classes = (sum(per_class) + lovasz_jaccard_reference([p[i][1] for i in range(4)], fg1)) / 3
    assert build_loss("lovasz_softmax(classes=all)", 3)(z, y).item() == pytest.approx(all_classes, rel=1e-5)


def effective(counts, beta):
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    return [len(counts) * r / sum(raw) for r in raw]


def test_class_balanced_focal_and_ce_formula():
    p = softmax_rows(Z)
    w = effective(COUNTS, 0.99)
    fl = [-w[y] * (1 - p[i][y]) ** 2 * math.log(p[i][y]) for i, y in enumerate(Y)]
    got = build_loss("cb(base='focal', beta=0.99, gamma=2)", 3, class_counts=COUNTS)(torch.tensor(Z), torch.tensor(Y))
    assert got.item() == pytest.approx(sum(fl) / 3, rel=1e-5)
    ce = [-w[y] * math.log(p[i][y]) for i, y in enumerate(Y)]
    got = build_loss("cb(base='ce', beta=0.99)", 3, class_counts=COUNTS)(torch.tensor(Z), torch.tensor(Y))
    assert got.item() == pytest.approx(sum(ce) / 3, rel=1e-5)


def test_class_balanced_sigmoid_focal_formula():
    # Cui et al.'s code (src/cifar_main.py, lines 323-330): every channel of sample i weighs w of its TRUE class
    w = effective(COUNTS, 0.99)
    total = 0.0
    for i, y in enumerate(Y):
        for c in range(3):
            t = 1.0 if c == y else 0.0
            pt = sig(Z[i][c]) if t else 1 - sig(Z[i][c])
            total += -w[y] * (1 - pt) ** 2 * math.log(pt)
    spec = "cb(base='sigmoid_focal', beta=0.99, gamma=2)"
    got = build_loss(spec, 3, class_counts=COUNTS)(torch.tensor(Z), torch.tensor(Y))
    assert got.item() == pytest.approx(total / 3, rel=1e-5)


def test_class_balanced_normalized_over_samples_has_mean_sample_weight_one():
    # the official weights sum to C; normalize="samples" rescales them so that sum_c n_c w_c = sum_c n_c
    w = effective(COUNTS, 0.99)
    scale = sum(COUNTS) / sum(n * v for n, v in zip(COUNTS, w))
    assert scale > 1.5  # on this long tail the official mean sample weight is well below 1
    total = 0.0
    for i, y in enumerate(Y):
        for c in range(3):
            t = 1.0 if c == y else 0.0
            pt = sig(Z[i][c]) if t else 1 - sig(Z[i][c])
            total += -scale * w[y] * (1 - pt) * math.log(pt)
    spec = "cb(base='sigmoid_focal', beta=0.99, gamma=1, normalize='samples')"
    got = build_loss(spec, 3, class_counts=COUNTS)(torch.tensor(Z), torch.tensor(Y))
    assert got.item() == pytest.approx(total / 3, rel=1e-5)
    official = build_loss("cb(base='sigmoid_focal', beta=0.99, gamma=1)", 3, class_counts=COUNTS)
    assert got.item() == pytest.approx(scale * official(torch.tensor(Z), torch.tensor(Y)).item(), rel=1e-6)
    with pytest.raises(UserError, match="cb: normalize must be 'classes' or 'samples', got 'batch'"):
        build_loss("cb(normalize='batch')", 3, class_counts=COUNTS)


def test_ldam_margins_and_class_weights():
    s, mmax = 5.0, 0.5
    m = [n ** -0.25 for n in COUNTS]
    m = [mmax * v / max(m) for v in m]

    def nll(i, y):
        shifted = [s * (v - (m[y] if c == y else 0.0)) for c, v in enumerate(Z[i])]
        return -(shifted[y] - math.log(sum(math.exp(u) for u in shifted)))

    plain = sum(nll(i, y) for i, y in enumerate(Y)) / 3
    loss = build_loss("ldam(max_margin=0.5, s=5)", 3, class_counts=COUNTS)
    assert loss(torch.tensor(Z), torch.tensor(Y)).item() == pytest.approx(plain, rel=1e-5)
    w = effective(COUNTS, 0.99)
    reweighted = sum(w[y] * nll(i, y) for i, y in enumerate(Y)) / sum(w[y] for y in Y)
    loss.set_class_weights(torch.tensor(w))
    assert loss(torch.tensor(Z), torch.tensor(Y)).item() == pytest.approx(reweighted, rel=1e-5)
    assert abs(plain - reweighted) > 1e-3
    loss.set_class_weights(None)
    assert loss(torch.tensor(Z), torch.tensor(Y)).item() == pytest.approx(plain, rel=1e-5)


def test_set_class_weights_reaches_through_a_sum():
    loss = build_loss("ldam + 0.5 * dice + ce", 3, class_counts=COUNTS)
    names = sorted(type(m).__name__ for m in loss.modules() if hasattr(m, "set_class_weights"))
    assert names == ["CrossEntropy", "LDAMLoss"]


def test_logit_adjusted_and_balanced_softmax_formulas():
    n = sum(COUNTS)
    for spec, tau in (("logit_adjusted(tau=0.5)", 0.5), ("logit_adjusted", 1.0)):
        terms = []
        for i, y in enumerate(Y):
            adj = [v + tau * math.log(COUNTS[c] / n) for c, v in enumerate(Z[i])]
            terms.append(-(adj[y] - math.log(sum(math.exp(a) for a in adj))))
        got = build_loss(spec, 3, class_counts=COUNTS)(torch.tensor(Z), torch.tensor(Y))
        assert got.item() == pytest.approx(sum(terms) / 3, rel=1e-5), spec
    bs = [-math.log(COUNTS[y] * math.exp(Z[i][y]) / sum(COUNTS[c] * math.exp(Z[i][c]) for c in range(3)))
          for i, y in enumerate(Y)]
    got = build_loss("balanced_softmax", 3, class_counts=COUNTS)(torch.tensor(Z), torch.tensor(Y))
    assert got.item() == pytest.approx(sum(bs) / 3, rel=1e-5)


def test_named_combinations_are_their_parts():
    z, y = SEG_Z[:, :1], (SEG_Y == 1).float().unsqueeze(1)
    probs = torch.sigmoid(z)
    bce = -(y * torch.log(probs) + (1 - y) * torch.log(1 - probs)).mean()
    dice = 1 - (2 * (probs * y).sum() + 1) / (probs.sum() + y.sum() + 1)
    got = build_loss("bce_dice", 1, "segmentation")(z, y)
    assert got.item() == pytest.approx(0.5 * bce.item() + dice.item(), rel=1e-5)
    assert seg("focal_dice(gamma=2, focal_weight=2, dice_weight=0.5)") == pytest.approx(
        2 * seg("focal(gamma=2)") + 0.5 * seg("dice"), rel=1e-6)
    assert seg("bce_dice") == pytest.approx(0.5 * seg("ce") + seg("dice"), rel=1e-6)


def test_spec_sum_is_the_weighted_sum_of_terms():
    assert seg("focal(gamma=2) + 0.5 * dice(smooth=1) - 0.25 * jaccard") == pytest.approx(
        seg("focal(gamma=2)") + 0.5 * seg("dice") - 0.25 * seg("jaccard"), rel=1e-6)
    assert build_loss([{"name": "focal", "gamma": 2}, {"name": "dice", "weight": 0.5}], 2, "segmentation")(
        SEG_Z, SEG_Y).item() == pytest.approx(seg("focal(gamma=2)") + 0.5 * seg("dice"), rel=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# Deep supervision


def test_deep_supervision_averages_or_weights_outputs():
    base = build_loss("dice + ce", 2, "segmentation")
    outs = [SEG_Z, 2 * SEG_Z, -SEG_Z]
    parts = [base(o, SEG_Y).item() for o in outs]
    assert DeepSupervision(base)(outs, SEG_Y).item() == pytest.approx(sum(parts) / 3, rel=1e-6)
    weighted = DeepSupervision(base, [0.5, 0.3, 0.2])(outs, SEG_Y).item()
    assert weighted == pytest.approx(0.5 * parts[0] + 0.3 * parts[1] + 0.2 * parts[2], rel=1e-6)
    assert DeepSupervision(base)(SEG_Z, SEG_Y).item() == pytest.approx(parts[0], rel=1e-6)
    with pytest.raises(ValueError, match="2 deep-supervision weights for 3 outputs"):
        DeepSupervision(base, [0.5, 0.5])(outs, SEG_Y)


def test_deep_supervision_passes_set_class_weights_through():
    loss = DeepSupervision(build_loss("ldam", 3, class_counts=COUNTS))
    hooked = [m for m in loss.modules() if hasattr(m, "set_class_weights")]
    assert len(hooked) == 1


# ---------------------------------------------------------------------------------------------------------------------
# User errors


@pytest.mark.parametrize(
    "spec, kwargs, message",
    [
        ("cb", {}, "loss: cb: cb needs the training class counts"),
        ("ldam", {}, "loss: ldam: ldam needs the training class counts"),
        ("ce(weight=balanced)", {}, "balanced weighting needs the training class counts"),
        ("dice(per_image=yes)", {"task": "segmentation"},
         r"per_image must be true or false \(default False\), got 'yes'"),
        ("dice(per_image=true)", {}, "per_image needs segmentation"),
        ("focal(gamma=-1)", {}, "gamma must be >= 0"),
        ("focal(alpha=2.5)", {}, r"scalar alpha must be in \[0, 1\]"),
        ("cb(base=mse)", {"class_counts": COUNTS}, "base must be 'ce', 'focal' or 'sigmoid_focal'"),
        ("ce(weight=[1, 2])", {}, r"one number per class \(3\)"),
        ("lovasz_softmax(classes=some)", {}, "classes must be 'present' or 'all'"),
        ("ldam(drw_epoch=7)", {"class_counts": COUNTS},
         "loss: ldam: drw_epoch is no longer a parameter of ldam; .* use the config key drw_epoch: N"),
        ("tversky(alpa=0.3)", {}, "unknown parameter 'alpa'; valid parameters: alpha, beta, smooth"),
        ("focal(gamma=high)", {}, r"loss: focal: gamma must be a number \(default 2.0\), got 'high'"),
        ("jaccard(skip_empty=1)", {}, r"skip_empty must be true or false, got 1"),
    ],
)
def test_user_mistakes_are_one_line_user_errors(spec, kwargs, message):
    with pytest.raises(UserError, match=message) as err:
        build_loss(spec, 3, **kwargs)
    assert "\n" not in str(err.value)


def test_wrong_target_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="does not match logits"):
        build_loss("focal", 3)(torch.randn(4, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="use lovasz_softmax"):
        build_loss("lovasz_hinge", 3, "segmentation")(*example("mc"))
    with pytest.raises(ValueError, match="needs class-index targets"):
        build_loss("logit_adjusted", 3, "segmentation", COUNTS)(*example("ml"))


def test_list_losses_prints_every_loss_with_parameters(capsys):
    from lossbench.cli import main

    assert main(["list", "losses"]) == 0
    out = capsys.readouterr().out
    for name in LOSSES:
        assert f"\n{name}(" in "\n" + out
    assert "ldam(max_margin=0.5, s=30.0, weight=None)" in out
    assert "Lin et al. 2017" in out


@pytest.mark.parametrize("per_image", [True, False])
def test_generalized_dice_with_uniform_weights_is_one_minus_the_mean_true_class_probability(per_image):
    # Sudre et al. 2017's GDL pools every class into one ratio: 1 - 2 sum_c w_c sum_i p_ic y_ic / sum_c w_c sum_i
    # (p_ic + y_ic). With w_c = 1 and softmax outputs the denominator is sum_i (1 + 1) = 2 N, so the loss is
    # 1 - mean_i p_i,true: an MAE-type loss (BENCHMARKS.md's segmentation reading rests on this identity).
    g = torch.Generator().manual_seed(3)
    z, t = torch.randn(2, 5, 6, 7, generator=g), torch.randint(0, 5, (2, 6, 7), generator=g)
    p_true = z.softmax(1).gather(1, t.unsqueeze(1)).squeeze(1)
    spec = f"generalized_dice(weight_type=uniform, per_image={str(per_image).lower()})"
    got = build_loss(spec, 5, "segmentation")(z, t)
    assert got.item() == pytest.approx(1 - p_true.mean().item(), abs=1e-6)
