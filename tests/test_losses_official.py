"""Losses against what their papers' OFFICIAL code computes, with its defaults, formulas written out here.

Each reference below is written with plain math / torch from the official
code named in its comment (and in the loss's docstring), never with
lossbench's helpers. Also: the one meaning of class weights, the
``set_class_weights`` interface of deferred re-weighting, and the Generalised
Dice formula (MONAI's conventions; the numerical comparison with MONAI itself
is tests/test_losses_monai.py).
"""

import math

import pytest
import torch
import torch.nn.functional as F

from lossbench.errors import UserError
from lossbench.losses import LOSSES, LossCapabilities, build_loss, declare_loss, loss_capabilities, loss_parameters

COUNTS = [60, 25, 5]
Z = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 2.0, 0.0], [0.5, -0.5, 1.5]]
Y = [0, 2, 1, 2]


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def sig(v):
    return 1 / (1 + math.exp(-v))


def effective(counts, beta):
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    return [len(counts) * r / sum(raw) for r in raw]


# ---------------------------------------------------------------------------------------------------------------------
# dsc: Li et al. 2020, official code ShannonAI/dice_loss_for_NLP, loss/dice_loss.py, run with --dice_square,
# smooth 1, alpha 0.01 (scripts/*/bert_dice.sh; utils/get_parser.py)


def dsc_multiclass_reference(z, y, alpha=0.01, s=1.0):
    """_multiple_class: per sample i and class c, 1 - (2 q y + s) / (q^2 + y^2 + s), q = (1-p)^alpha p;
    summed over classes (``loss += loss_idx``), then reduction "mean" over samples."""
    total = 0.0
    for row, t in zip(z, y):
        e = [math.exp(v) for v in row]
        for c in range(len(row)):
            p = e[c] / sum(e)
            one_minus_p = sum(e[k] for k in range(len(row)) if k != c) / sum(e)  # no 1 - p cancellation
            q = one_minus_p**alpha * p
            yc = 1.0 if c == t else 0.0
            total += 1 - (2 * q * yc + s) / (q * q + yc * yc + s)
    return total / len(z)


def test_dsc_is_the_official_multiclass_form_with_its_defaults():
    assert loss_parameters(LOSSES.get("dsc")) == {"alpha": 0.01, "smooth": 1.0}
    got = build_loss("dsc", 3)(torch.tensor(Z), torch.tensor(Y))
    assert got.item() == pytest.approx(dsc_multiclass_reference(Z, Y), rel=1e-5)
    got = build_loss("dsc(alpha=0.5, smooth=0.3)", 3)(torch.tensor(Z), torch.tensor(Y))
    assert got.item() == pytest.approx(dsc_multiclass_reference(Z, Y, 0.5, 0.3), rel=1e-5)


def test_dsc_segmentation_treats_each_pixel_as_a_sample():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(2, 3, 2, 2, generator=g), torch.randint(0, 3, (2, 2, 2), generator=g)
    rows = z.permute(0, 2, 3, 1).reshape(-1, 3).tolist()
    expected = dsc_multiclass_reference(rows, y.reshape(-1).tolist())
    assert build_loss("dsc", 3, "segmentation")(z, y).item() == pytest.approx(expected, rel=1e-5)


def test_dsc_one_channel_is_one_dice_over_the_batch():
    # _binary_class: flattened over the batch, 1 - (2 sum q y + s) / (sum q^2 + sum y^2 + s), q = (1-p)^alpha p
    z, y = [1.5, -0.5, 0.2, -2.0, 3.0, 0.7], [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    q = [(1 - sig(v)) ** 0.01 * sig(v) for v in z]
    expected = 1 - (2 * sum(a * b for a, b in zip(q, y)) + 1) / (sum(a * a for a in q) + sum(y) + 1)
    got = build_loss("dsc", 1, "segmentation")(torch.tensor(z).view(1, 1, 2, 3), torch.tensor(y).view(1, 1, 2, 3))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_dsc_computes_one_minus_p_without_cancellation():
    # 1 - p = 2 e^-40 here: 1 - softmax rounds it to 0 in float32 (and float64), which would zero (1 - p)^alpha
    z, y = [[40.0, 0.0, 0.0], [0.0, 0.0, 35.0]], [0, 1]
    logits = torch.tensor(z, requires_grad=True)
    got = build_loss("dsc", 3)(logits, torch.tensor(y))
    assert got.item() == pytest.approx(dsc_multiclass_reference(z, y), rel=1e-5)
    got.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0].abs().sum() > 0


def test_dsc_ranks_a_perfect_predictor_below_a_constant_and_an_always_wrong_one():
    y = torch.arange(10).repeat(3)
    onehot = F.one_hot(y, 10).float()
    loss = build_loss("dsc", 10)
    perfect = loss(20 * onehot, y).item()
    constant = loss(torch.zeros(30, 10), y).item()
    wrong = loss(20 * F.one_hot((y + 1) % 10, 10).float(), y).item()
    assert perfect < constant < wrong
    assert perfect < 0.1 < constant


# ---------------------------------------------------------------------------------------------------------------------
# cb: Cui et al. 2019, official code richardaecn/class-balanced-loss, src/cifar_main.py


def test_cb_defaults_are_the_official_long_tail_script():
    # cifar_im_trainval_cb.sh: --loss-type=focal (sigmoid), --beta=0.9999, --gamma=1.0; the weights sum to C
    # (cifar_main.py lines 425-430), normalize="classes"
    assert loss_parameters(LOSSES.get("cb")) == {"base": "sigmoid_focal", "beta": 0.9999, "gamma": 1.0,
                                                 "normalize": "classes"}


def test_cb_sigmoid_focal_is_the_official_focal_loss():
    # focal_loss (lines 226-266): modulator exp(-g y z - g log1p(exp(-z))), BCE with logits, alpha = the weight of
    # the sample's true class tiled over every channel (lines 323-330), the sum divided by sum(labels) = N
    w = effective(COUNTS, 0.9999)
    g = 1.0
    total = 0.0
    for row, t in zip(Z, Y):
        for c, v in enumerate(row):
            yc = 1.0 if c == t else 0.0
            bce = max(v, 0) - v * yc + math.log1p(math.exp(-abs(v)))
            modulator = math.exp(-g * yc * v - g * math.log1p(math.exp(-v)))
            total += w[t] * modulator * bce
    got = build_loss("cb", 3, class_counts=COUNTS)(torch.tensor(Z), torch.tensor(Y))
    assert got.item() == pytest.approx(total / len(Y), rel=1e-5)


def test_cb_softmax_is_weighted_sum_over_number_of_samples():
    # loss_type "softmax": tf.losses.softmax_cross_entropy(weights=w_y), reduction SUM_BY_NONZERO_WEIGHTS = / N
    w = effective(COUNTS, 0.999)
    ce = [-math.log(softmax(row)[t]) for row, t in zip(Z, Y)]
    got = build_loss("cb(base=ce, beta=0.999)", 3, class_counts=COUNTS)(torch.tensor(Z), torch.tensor(Y))
    assert got.item() == pytest.approx(sum(w[t] * v for t, v in zip(Y, ce)) / len(Y), rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# ldam: Cao et al. 2019, official code kaidic/LDAM-DRW, losses.py (LDAMLoss) and cifar_train.py


def test_ldam_is_cross_entropy_of_shifted_scaled_logits_with_pytorch_weights():
    # m = n^(-1/4) scaled so max(m) = max_m; F.cross_entropy(s * (x - m_y e_y), y, weight=w): PyTorch's weighted mean
    z, y = torch.tensor(Z), torch.tensor(Y)
    m = torch.tensor(COUNTS, dtype=torch.float64).pow(-0.25)
    m = (m * 0.5 / m.max()).float()
    shifted = z - F.one_hot(y, 3).float() * m
    w = torch.tensor([0.2, 1.0, 3.0])
    for s in (30.0, 1.0):
        ref = F.cross_entropy(s * shifted, y, weight=w)
        got = build_loss(f"ldam(s={s}, weight=[0.2, 1, 3])", 3, class_counts=COUNTS)(z, y)
        assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    assert loss_parameters(LOSSES.get("ldam")) == {"max_margin": 0.5, "s": 30.0, "weight": None}


def test_ldam_without_margin_is_cross_entropy_of_the_scaled_cosine_logits():
    # the control of the margin: max_margin = 0 leaves F.cross_entropy(s * z, y) on the same head and scale
    z, y = torch.tensor(Z), torch.tensor(Y)
    got = build_loss("ldam(s=30, max_margin=0)", 3, class_counts=COUNTS)(z, y)
    assert got.item() == pytest.approx(F.cross_entropy(30.0 * z, y).item(), rel=1e-5)
    assert loss_capabilities(build_loss("ldam(s=30, max_margin=0)", 3, class_counts=COUNTS)).expects_cosine_logits
    with pytest.raises(UserError, match="max_margin must be >= 0"):
        build_loss("ldam(max_margin=-0.1)", 3, class_counts=COUNTS)


def test_ldam_says_when_it_expects_cosine_logits():
    assert loss_capabilities(build_loss("ldam", 3, class_counts=COUNTS)).expects_cosine_logits is True
    assert loss_capabilities(build_loss("ldam(s=1)", 3, class_counts=COUNTS)).expects_cosine_logits is False


@pytest.mark.parametrize("spec", ["ldam(drw_epoch=160)", "ldam(s=1, beta=0.9999)"])
def test_ldam_points_drw_parameters_to_the_config_key(spec):
    with pytest.raises(UserError, match="use the config key drw_epoch: N") as err:
        build_loss(spec, 3, class_counts=COUNTS)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------------------------------
# One meaning for class weights: sum_i w_{y_i} l_i / sum_i w_{y_i} (PyTorch's F.cross_entropy convention)

W = [0.5, 1.0, 4.0]


def seg_example(seed=0):
    g = torch.Generator().manual_seed(seed)
    z, y = torch.randn(2, 3, 4, 4, generator=g), torch.randint(0, 3, (2, 4, 4), generator=g)
    y[0, :2, :2] = 255
    return z, y


def test_focal_with_gamma_zero_and_class_alpha_is_weighted_cross_entropy():
    z, y = torch.tensor(Z), torch.tensor(Y)
    ref = F.cross_entropy(z, y, weight=torch.tensor(W))
    assert build_loss(f"focal(gamma=0, alpha={W})", 3)(z, y).item() == pytest.approx(ref.item(), rel=1e-5)
    assert build_loss(f"ce(weight={W})", 3)(z, y).item() == pytest.approx(ref.item(), rel=1e-5)
    z, y = seg_example()
    ref = F.cross_entropy(z, y, weight=torch.tensor(W), ignore_index=255)
    for spec in (f"focal(gamma=0, alpha={W})", f"ce(weight={W})"):
        assert build_loss(spec, 3, "segmentation")(z, y).item() == pytest.approx(ref.item(), rel=1e-5), spec


def test_sigmoid_focal_with_class_alpha_weighs_every_channel_by_the_true_class():
    loss = build_loss(f"focal(gamma=2, alpha={W}, sigmoid=true)", 3)
    total = norm = 0.0
    for row, t in zip(Z, Y):
        for c, v in enumerate(row):
            pt = sig(v) if c == t else 1 - sig(v)
            total += W[t] * -(1 - pt) ** 2 * math.log(pt)
            norm += W[t]
    assert loss(torch.tensor(Z), torch.tensor(Y)).item() == pytest.approx(total / norm, rel=1e-5)


@pytest.mark.parametrize("name", ["ce", "focal", "ldam(s=1)", "focal(sigmoid=true)"])
def test_set_class_weights_equals_configured_weights_and_none_restores(name):
    base, _, rest = name.partition("(")
    key = "alpha" if base == "focal" else "weight"
    params = rest.rstrip(")")
    weighted_spec = f"{base}({key}={W}{', ' + params if params else ''})"
    z, y = seg_example(1)
    loss = build_loss(name, 3, "segmentation", COUNTS)
    plain = loss(z, y).item()
    loss.set_class_weights(torch.tensor(W))
    expected = build_loss(weighted_spec, 3, "segmentation", COUNTS)(z, y).item()
    assert loss(z, y).item() == pytest.approx(expected, rel=1e-6)
    assert abs(expected - plain) > 1e-4
    loss.set_class_weights(None)
    assert loss(z, y).item() == pytest.approx(plain, rel=1e-6)
    with pytest.raises(ValueError, match="3 finite numbers >= 0"):
        loss.set_class_weights(torch.ones(4))


def test_set_class_weights_none_restores_the_configured_weights():
    z, y = torch.tensor(Z), torch.tensor(Y)
    loss = build_loss(f"ce(weight={W})", 3)
    configured = loss(z, y).item()
    loss.set_class_weights(torch.ones(3))
    assert loss(z, y).item() == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-6)
    loss.set_class_weights(None)
    assert loss(z, y).item() == pytest.approx(configured, rel=1e-6)


def test_only_losses_with_per_class_sample_weights_take_set_class_weights():
    takers = sorted(name for name, cls in LOSSES.items() if hasattr(cls, "set_class_weights"))
    assert takers == ["ce", "focal", "ldam"]


def test_losses_declare_their_capabilities_and_a_wrong_declaration_is_refused():
    def declared(field):
        return sorted(name for name, cls in LOSSES.items() if getattr(cls.capabilities, field))

    assert declared("accepts_class_weights") == ["ce", "focal", "ldam"]
    assert declared("expects_cosine_logits") == ["ldam"]
    assert declared("needs_class_counts") == ["balanced_softmax", "cb", "ldam", "logit_adjusted"]
    for name in declared("needs_class_counts"):
        with pytest.raises(UserError, match="needs the training class counts"):
            build_loss(name, 3)
    sum_of_terms = build_loss("ldam + dice", 3, class_counts=COUNTS)  # the sum itself declares nothing
    assert loss_capabilities(sum_of_terms) == LossCapabilities()

    class NoSetter(torch.nn.Module):
        def __init__(self, ctx, s: float = 1.0):
            super().__init__()

    with pytest.raises(ValueError, match="accepts_class_weights=True but the class has no set_class_weights"):
        declare_loss("no_setter", LossCapabilities(accepts_class_weights=True))(NoSetter)
    with pytest.raises(ValueError, match="expects_cosine_logits needs the scale as parameter s"):
        declare_loss("no_scale", LossCapabilities(expects_cosine_logits=True))(torch.nn.Identity)


# ---------------------------------------------------------------------------------------------------------------------
# generalized_dice: Sudre et al. 2017, with MONAI's conventions (monai/losses/dice.py, GeneralizedDiceLoss)


def gdl_reference(p, y, weight_type="square", s_nr=1e-5, s_dr=1e-5):
    """One GDL from per-class lists of probabilities p[c] and targets y[c] over the same pixels."""
    tp = [sum(a * b for a, b in zip(pc, yc)) for pc, yc in zip(p, y)]
    psum, ysum = [sum(pc) for pc in p], [sum(yc) for yc in y]
    if weight_type == "uniform":
        w = [1.0] * len(p)
    else:
        w = [1 / (v * v if weight_type == "square" else v) if v > 0 else math.inf for v in ysum]
    finite = [v for v in w if v != math.inf]
    w = [max(finite, default=0.0) if v == math.inf else v for v in w]  # MONAI: an empty class takes the max weight
    numer = 2 * sum(a * b for a, b in zip(w, tp)) + s_nr
    denom = sum(a * (b + c) for a, b, c in zip(w, psum, ysum)) + s_dr
    return 1 - numer / denom


def softmax_pixels(z, y, images):
    """Per-class lists of softmax probabilities and one-hot targets over the pixels of ``images``."""
    c = z.shape[1]
    p, t = [[] for _ in range(c)], [[] for _ in range(c)]
    for n in images:
        for row, label in zip(z[n].reshape(c, -1).T.tolist(), y[n].reshape(-1).tolist()):
            probs = softmax(row)
            for k in range(c):
                p[k].append(probs[k])
                t[k].append(1.0 if label == k else 0.0)
    return p, t


@pytest.mark.parametrize("weight_type", ["square", "simple", "uniform"])
def test_generalized_dice_per_image_and_over_the_batch(weight_type):
    g = torch.Generator().manual_seed(3)
    z, y = torch.randn(2, 3, 3, 3, generator=g), torch.randint(0, 2, (2, 3, 3), generator=g)
    y[1, 0, 0] = 2  # class 2 is absent from image 0: infinite weight -> the largest finite weight of the image
    per_image = sum(gdl_reference(*softmax_pixels(z, y, [n]), weight_type) for n in (0, 1)) / 2
    batch = gdl_reference(*softmax_pixels(z, y, [0, 1]), weight_type)
    got = build_loss(f"generalized_dice(weight_type={weight_type})", 3, "segmentation")(z, y)
    assert got.item() == pytest.approx(per_image, rel=1e-5)
    got = build_loss(f"generalized_dice(per_image=false, weight_type={weight_type})", 3, "segmentation")(z, y)
    assert got.item() == pytest.approx(batch, rel=1e-5)


def test_generalized_dice_sigmoid_channels_and_classification():
    z, y = [1.5, -0.5, 0.2, -2.0], [1.0, 0.0, 1.0, 0.0]
    expected = gdl_reference([[sig(v) for v in z]], [y])
    got = build_loss("generalized_dice", 1, "segmentation")(torch.tensor(z).view(1, 1, 2, 2),
                                                           torch.tensor(y).view(1, 1, 2, 2))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    p = [[softmax(row)[c] for row in Z] for c in range(3)]
    t = [[1.0 if label == c else 0.0 for label in Y] for c in range(3)]
    assert build_loss("generalized_dice", 3)(torch.tensor(Z), torch.tensor(Y)).item() == pytest.approx(
        gdl_reference(p, t), rel=1e-5)
    with pytest.raises(UserError, match="per_image needs segmentation"):
        build_loss("generalized_dice(per_image=true)", 3)
