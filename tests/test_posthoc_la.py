"""Post-hoc logit adjustment (Menon et al. 2021, Sec. 4): logits - tau * log(pi), tau chosen off the scored split.

The official code (google-research/google-research, logit_adjustment/main.py, mode 'posthoc') subtracts
tau * log(base_probs) from a trained ERM model's logits, tau = 1.0 by default.
"""

import json

import numpy as np
import pytest
import torch
from cli_helper import run_cli
from sklearn.metrics import balanced_accuracy_score
from test_recipe_fashion_mnist_lt import fake_fashion_mnist

from lossbench.data import build_data
from lossbench.engine.inference import load_run
from lossbench.engine.inference.logit_adjustment import (
    TAUS,
    adjust_logits,
    choose_tau,
    collect_logits,
    training_log_prior,
)
from lossbench.losses import build_loss


def test_adjustment_is_logits_minus_tau_log_prior_written_out():
    counts = [90, 9, 1]
    logits = torch.tensor([[2.0, 1.0, 0.5], [0.1, 0.3, 0.2]])
    pi = np.array(counts) / sum(counts)
    expected = logits.numpy() - 0.5 * np.log(pi)[None, :]
    got = adjust_logits(logits, training_log_prior(counts), 0.5)
    assert np.allclose(got.numpy(), expected, atol=1e-6)
    # a class without training images counts as one, as the losses count it
    assert torch.allclose(training_log_prior([3, 0]), torch.log(torch.tensor([3 / 4, 1 / 4])))


def test_the_prior_is_the_one_the_logit_adjusted_loss_trains_with():
    counts = [50, 5, 2]
    logits, target = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    # training with logit_adjusted(tau) = CE on logits + tau * log pi; post-hoc subtracts the same shift
    loss = build_loss("logit_adjusted(tau=1.5)", 3, "classification", counts, 255)(logits, target)
    shifted = adjust_logits(logits, training_log_prior(counts), -1.5)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(shifted, target).item(), rel=1e-6)


def test_choose_tau_maximises_balanced_accuracy_and_breaks_ties_towards_one():
    counts = [900, 100]
    # the head class wins every plain argmax by 1.0; log(900/100) = 2.197, so tau >= 0.5 flips the tail samples
    logits = torch.tensor([[1.0, 0.0]] * 8)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    logits[:4, 0] += 3.0  # head samples: a margin of 4, kept until tau > 1.82
    tau, scores = choose_tau(logits, labels, training_log_prior(counts))
    for t, s in scores.items():
        pred = adjust_logits(logits, training_log_prior(counts), t).argmax(1)
        assert s == pytest.approx(balanced_accuracy_score(labels, pred))
    best = max(scores.values())
    assert best == 1.0 and scores[0.0] == 0.5
    assert tau == 1.0  # 0.5 ... 1.75 all score 1.0: the official default among them wins
    assert set(scores) == set(TAUS)


@pytest.fixture(scope="module")
def lt_run(tmp_path_factory):
    """One epoch of a tiny long-tailed CE run evaluated on test, with a held-out split."""
    tmp = tmp_path_factory.mktemp("posthoc")
    root = fake_fashion_mnist(tmp / "fm", train_per_class=60, test_per_class=6)
    config = tmp / "lt.yaml"
    config.write_text(f"""name: lt
task: classification
output_dir: {tmp / 'runs'}
epochs: 1
batch_size: 32
loss: ce
data: {{source: fashion_mnist, root: {root}, imbalance_ratio: 10, eval_split: test, holdout: true,
       val_fraction: 0.2, image_size: 8, cache: false}}
model: {{name: resnet20, in_channels: 1}}
optimizer: {{name: sgd, lr: 0.05}}
""")
    res = run_cli(["train", str(config)])
    assert res.code == 0, res.err
    return tmp / "runs" / "lt", config


def test_eval_posthoc_chooses_tau_on_holdout_and_scores_test_with_it(lt_run):
    run_dir, _ = lt_run
    res = run_cli(["eval", str(run_dir), "--checkpoint", "last", "--posthoc-la", "--name", "la"])
    assert res.code == 0, res.err
    written = json.loads((run_dir / "eval" / "la" / "metrics.json").read_text())
    # recompute by hand: tau = argmax over TAUS of sklearn's balanced accuracy on the held-out logits
    run = load_run(run_dir, "last")
    bundle = build_data(run.exp)
    counts = list(json.loads((run_dir / "class_counts.json").read_text()).values())
    log_pi = np.log(np.array(counts, dtype=float) / sum(counts))
    hold_logits, hold_labels = collect_logits(run, bundle.holdout, 64)
    by_tau = {t: balanced_accuracy_score(hold_labels, (hold_logits.numpy() - t * log_pi).argmax(1)) for t in TAUS}
    best = max(by_tau.values())
    expected_tau = min((t for t, s in by_tau.items() if s == best), key=lambda t: abs(t - 1))
    assert written["posthoc_la"]["tau"] == expected_tau and written["posthoc_la"]["chosen_on"] == "holdout"
    test_logits, test_labels = collect_logits(run, bundle.val, 64)  # eval_split: test -> the evaluated split
    pred = (test_logits.numpy() - expected_tau * log_pi).argmax(1)
    assert written["metrics"]["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(test_labels, pred))
    assert written["num_images"] == 60 and "post-hoc logit adjustment" in res.out


def test_eval_with_a_fixed_tau_and_without_a_split_to_choose_on(lt_run, tmp_path):
    run_dir, config = lt_run
    res = run_cli(["eval", str(run_dir), "--checkpoint", "last", "--tau", "0", "--name", "tau0"])
    plain = run_cli(["eval", str(run_dir), "--checkpoint", "last", "--name", "plain"])
    assert res.code == 0 and plain.code == 0, res.err + plain.err
    zero = json.loads((run_dir / "eval" / "tau0" / "metrics.json").read_text())
    base = json.loads((run_dir / "eval" / "plain" / "metrics.json").read_text())
    assert zero["metrics"]["balanced_accuracy"] == base["metrics"]["balanced_accuracy"]  # tau 0: unchanged
    assert zero["posthoc_la"]["chosen_on"] is None
    # a run without data.holdout evaluated on test has no split to choose on apart from the scored one
    no_holdout = tmp_path / "runs"
    text = config.read_text().replace("holdout: true", "holdout: false").replace(
        f"output_dir: {config.parent / 'runs'}", f"output_dir: {no_holdout}")
    (tmp_path / "lt.yaml").write_text(text)
    assert run_cli(["train", str(tmp_path / "lt.yaml")]).code == 0
    res = run_cli(["eval", str(no_holdout / "lt"), "--posthoc-la", "--checkpoint", "last"])
    assert res.code == 2 and res.err.count("\n") == 1
    assert res.err.startswith("lossbench: error: --posthoc-la: tau is chosen on a split other than the one scored")
    assert run_cli(["eval", str(run_dir), "--tau", "-1"]).code == 2


def test_a_kept_result_outlives_its_deleted_checkpoint_and_none_is_one_line(lt_run, tmp_path):
    import shutil

    from lossbench.engine.inference.logit_adjustment import CACHE_NAME, run_posthoc
    from lossbench.errors import UserError

    run_dir = tmp_path / "lt"
    shutil.copytree(lt_run[0], run_dir)
    run_posthoc(run_dir, "last")
    kept = run_posthoc(run_dir, "last")  # read back from posthoc_la.json
    (run_dir / "last.pt").unlink()  # a sweep folder pruned of its checkpoints: the report still has the result
    assert run_posthoc(run_dir, "last") == kept
    cache = json.loads((run_dir / CACHE_NAME).read_text())
    cache["key"]["taus"] = [1.0]  # kept for another tau grid: not this result
    (run_dir / CACHE_NAME).write_text(json.dumps(cache))
    with pytest.raises(UserError, match="last.pt") as err:
        run_posthoc(run_dir, "last")
    assert "\n" not in str(err.value)
