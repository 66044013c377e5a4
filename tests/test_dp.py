"""DP-SGD on the tiny Llama: the shipped support assistant trains within its budget through
`fmc run`; each row's gradient is its own and clipped, the noise has the calibrated scale,
a resumed run ends with the uninterrupted run's weights, the accountant stops a run
before it overspends, and budgets no noise can meet are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("opacus")

from fmlang.backends.train import checkpoints, dp_state  # noqa: E402
from fmlang.backends.train.dp import PrivateRun, Schedule  # noqa: E402
from fmlang.backends.train.job import DPSettings, TrainJob  # noqa: E402
from fmlang.backends.train.privacy import Ledger, PrivacyPlan, privacy_plan  # noqa: E402
from fmlang.backends.train.trainer import prepare, train  # noqa: E402
from fmlang.errors import StageError  # noqa: E402
from fmlang.ir.base import SourceSpan  # noqa: E402
from tests.test_train_tiny import (  # noqa: E402
    adapter_weights,
    assert_same_weights,
    qa_data,
    tiny_job,
)

__all__ = ["qa_data"]  # a fixture shared with test_train_tiny (tiny_model: conftest)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "support_assistant"
SUBSTITUTIONS = (
    ("import std.models.llama3_2_1b", "import std.models.tiny_causal_lm"),
    ("base    llama3_2_1b", "base    tiny_causal_lm"),
    ("max_seq 1024", "max_seq 256"),
    ("import std.hardware.a10g", "import std.hardware.{a10g, cpu_2core}"),
    ("    hardware   = a10g\n", "    hardware   = cpu_2core\n"),
)
DP_SPAN = SourceSpan(file="a.fm", line=40, column=5, end_line=44, end_column=6)


def dp_job(model: Path, data: Path, output: Path, dp: DPSettings | None = None,
           **training: Any) -> TrainJob:  # fmt: skip
    settings = dp or DPSettings(epsilon=8.0, delta=1e-5, max_grad_norm=1.0)
    job = tiny_job(model, data, output, **{"max_steps": 12, "save_steps": 4, **training})
    return job.model_copy(update={"dp": settings, "spans": {"train.dp": DP_SPAN}})


def test_support_assistant_trains_with_dp_within_its_budget(
    tmp_path: Path, tiny_model: Path
) -> None:
    """The shipped example through `fmc run`, on this CPU: the tiny Llama in place of Llama
    3.2 1B (so max_seq 256), training on `cpu_2core` instead of an A10G, and without its
    kserve deployment (vLLM manifests need hub weights, not the tiny local folder)."""
    from fmlang.cli.main import cli

    project = tmp_path / "support_assistant"
    shutil.copytree(EXAMPLE, project)
    spec = project / "assistant.fm"
    text = spec.read_text(encoding="utf-8")
    for old, new in SUBSTITUTIONS:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    deploy = text.index("deploy support_assistant {")
    spec.write_text(text[:deploy], encoding="utf-8")
    (project / "tiny-causal-lm").symlink_to(tiny_model)
    build = tmp_path / "build"
    command = ["run", str(spec), "-o", str(build), "--until", "train", "--as", "team:support-ml",
               "--format", "json"]  # fmt: skip
    result = CliRunner().invoke(cli, command, catch_exceptions=False)
    # a random tiny model misses the perplexity gate (<= 12); nothing else may fail
    errors = [d for d in json.loads(result.stdout)["diagnostics"] if d["severity"] == "error"]
    assert [d["code"] for d in errors] == ["FM0860"], errors
    assert result.exit_code == 1
    metrics = json.loads((build / "run/models/support_assistant/metrics.json").read_text())
    dp = metrics["train"]["dp"]
    assert dp["accountant"] == "rdp" and dp["epsilon"] == 8.0 and dp["delta"] == 1e-5
    assert dp["noise_multiplier"] > 0 and dp["max_grad_norm"] == 1.0
    assert dp["steps"] == dp["planned_steps"] == metrics["train"]["steps"]
    assert 0 < dp["epsilon_spent"] <= dp["epsilon"]
    # every model trained on `tickets` together within the dataset's budget (epsilon_budget 8
    # and `dp_epsilon <= 8 on tickets`): here one model spends it
    spent_on_tickets = sum(
        json.loads(path.read_text())["train"]["dp"]["epsilon_spent"]
        for path in (build / "run/models").glob("*/metrics.json")
    )
    assert spent_on_tickets <= 8.0
    assert metrics["privacy"]["dataset"] == "tickets"
    assert metrics["privacy"]["epsilon_spent"] == dp["epsilon_spent"]
    report = json.loads((build / "run/report.json").read_text())
    assert report["privacy"] == {
        "tickets": {"epsilon_spent": dp["epsilon_spent"], "models": ["support_assistant"]}
    }
    assert (build / "run/models/support_assistant/adapter/adapter_model.safetensors").is_file()


def private_run(job: TrainJob) -> PrivateRun:
    parts = prepare(job, progress=False)
    schedule = Schedule.of(parts.args, len(parts.rows))
    plan = privacy_plan(job, len(parts.rows), schedule.logical, schedule.steps)
    return PrivateRun(job, parts, plan, schedule)


def per_row_gradients(run: PrivateRun, rows: list[int]) -> list[Any]:
    run.backward(rows)
    found = [p.grad_sample.clone() for p in run.optimizer.params]
    run.optimizer.zero_grad(set_to_none=True)
    return found


def test_each_rows_gradient_is_its_own_and_clipped(
    tiny_model: Path, qa_data: Path, tmp_path: Path
) -> None:
    run = private_run(
        dp_job(tiny_model, qa_data, tmp_path, DPSettings(epsilon=8.0, max_grad_norm=0.05))
    )
    for module in run.model.modules():  # no adapter dropout: one row, one gradient
        if isinstance(module, torch.nn.Dropout):  # (opacus' hooks record in training mode)
            module.eval()
    trainable = [p for p in run.parts.model.parameters() if p.requires_grad]
    assert len(run.optimizer.params) == len(trainable) == 8  # LoRA A and B on q and v, 2 layers
    # row 0's gradient is the same whatever else was sampled with it (a batch-wide token
    # mean would scale it by the other rows' lengths, and break the clipping bound)
    among_short = per_row_gradients(run, [0, 1, 2, 3])
    among_long = per_row_gradients(run, [0, 40, 45, 47])
    alone = per_row_gradients(run, [0])
    for a, b, c in zip(among_short, among_long, alone, strict=True):
        assert a.shape[0] == 4 and c.shape[0] == 1
        torch.testing.assert_close(a[0], b[0], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(a[0], c[0], rtol=1e-4, atol=1e-7)
    # clipping: one row contributes min(its norm, max_grad_norm)
    for row in (0, 40):
        norm = torch.cat([g.flatten() for g in per_row_gradients(run, [row])]).norm()
        assert norm > 0.05  # so the clip is exercised
        run.backward([row])
        run.optimizer.clip_and_accumulate()
        clipped = torch.cat([p.summed_grad.flatten() for p in run.optimizer.params]).norm()
        assert clipped == pytest.approx(0.05, rel=1e-4)
        run.optimizer.zero_grad(set_to_none=True)


def test_a_classifiers_head_and_adapter_get_per_row_gradients(
    tiny_model: Path, tmp_path: Path
) -> None:
    """Classification: the adapter and the head peft trains beside it (`score`, a copy in
    `modules_to_save`) are the trainable layers, and opacus gives each a per-row gradient."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fmlang.backends.train.job import BaseWeights, Columns

    rows = [{"text": f"message {i} " + ("buy now" if i % 2 else "hello"),
             "label": ["ham", "spam"][i % 2]} for i in range(24)]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    job = TrainJob(
        model="classifier",
        task="classify",
        base=BaseWeights(kind="local", location=str(tiny_model)),
        classes=("ham", "spam"),
        adapter_config={"peft_type": "LORA", "r": 4, "target_modules": ["q_proj", "v_proj"]},
        training_args={"max_steps": 2, "per_device_train_batch_size": 4, "seed": 1},
        train_data=str(tmp_path / "train.parquet"),
        columns=Columns(input="text", label="label"),
        output_dir=str(tmp_path / "out"),
        dp=DPSettings(epsilon=4.0),
    )
    run = private_run(job)
    names = {id(p): n for n, p in run.parts.model.named_parameters() if p.requires_grad}
    assert {id(p) for p in run.optimizer.params} == set(names) and len(names) == 9
    assert sum("score" in n for n in names.values()) == 1  # its weight (Llama: no bias)
    gradients = per_row_gradients(run, [0, 1, 2])
    for parameter, per_row in zip(run.optimizer.params, gradients, strict=True):
        assert per_row.shape == (3, *parameter.shape)
        if "lora_A" not in names[id(parameter)]:  # lora_B starts at zero, so A's are zero
            assert (per_row.flatten(1).norm(dim=1) > 0).all(), names[id(parameter)]


def test_the_noise_has_the_calibrated_scale(
    tiny_model: Path, qa_data: Path, tmp_path: Path
) -> None:
    run = private_run(dp_job(tiny_model, qa_data, tmp_path))
    plan = run.plan
    assert plan.sample_rate == pytest.approx(4 / 48) and plan.steps == 12
    assert 0.3 < plan.noise_multiplier < 3.0
    assert Ledger(plan, [(plan.noise_multiplier, plan.sample_rate, 12)]).spent() <= 8.0
    run.backward([0, 1, 2, 3])
    run.optimizer.clip_and_accumulate()
    clean = [p.summed_grad.clone() for p in run.optimizer.params]
    run.optimizer.add_noise()
    noise = torch.cat([(p.grad - c).flatten() for p, c in zip(run.optimizer.params, clean,
                                                                strict=True)])  # fmt: skip
    assert noise.numel() > 3000
    expected = plan.noise_multiplier * plan.max_grad_norm
    assert noise.std().item() == pytest.approx(expected, rel=0.06)
    assert abs(noise.mean().item()) < 4 * expected / noise.numel() ** 0.5


@pytest.fixture(scope="module")
def whole_run(tiny_model: Path, qa_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted DP run of 12 steps with a checkpoint every 4."""
    output = tmp_path_factory.mktemp("dp") / "whole"
    result = train(dp_job(tiny_model, qa_data, output), progress=False)
    assert result.steps == 12 and result.dp is not None
    assert 7.0 < result.dp["epsilon_spent"] <= 8.0
    return output


def cut_after(whole: Path, copy: Path, step: int) -> Path:
    """`whole` as a run killed right after the checkpoint of `step` was complete."""
    shutil.copytree(whole, copy)
    shutil.rmtree(copy / "adapter")
    (copy / "train_result.json").unlink()
    for later, path in checkpoints.checkpoint_steps(copy / "checkpoints").items():
        if later > step:
            shutil.rmtree(path)
    return copy


def test_a_resumed_run_ends_with_the_uninterrupted_weights(
    whole_run: Path, tiny_model: Path, qa_data: Path, tmp_path: Path
) -> None:
    cut = cut_after(whole_run, tmp_path / "cut", 4)
    result = train(dp_job(tiny_model, qa_data, cut), progress=False)
    assert result.resumed_from_step == 4 and result.steps == 12
    assert_same_weights(adapter_weights(whole_run), adapter_weights(cut))
    whole = json.loads((whole_run / "train_result.json").read_text())
    assert result.dp == whole["dp"]
    assert list(result.loss_curve) == [tuple(point) for point in whole["loss_curve"]]


def test_a_run_with_another_noise_seed_ends_elsewhere(
    whole_run: Path, tiny_model: Path, qa_data: Path, tmp_path: Path
) -> None:
    """Same data, spec seed and steps; only the secret seed differs, so only the sampling
    and the noise do: the weights must differ (the noise is applied, and not from the
    spec's public seed)."""
    cut = cut_after(whole_run, tmp_path / "cut", 0)
    seed_file = cut / "checkpoints" / dp_state.SEED_FILE
    assert seed_file.stat().st_mode & 0o077 == 0  # the owner's only
    seed_file.write_text(f"{int(seed_file.read_text()) + 1}\n")
    train(dp_job(tiny_model, qa_data, cut), progress=False)
    ours, theirs = adapter_weights(cut), adapter_weights(whole_run)
    assert ours.keys() == theirs.keys()
    lora_b = [k for k in ours if "lora_B" in k]  # zero at the start: all of it is training
    assert lora_b and all(not ours[k].equal(theirs[k]) for k in lora_b)


def test_the_accountant_stops_a_run_before_it_overspends(
    whole_run: Path, tiny_model: Path, qa_data: Path, tmp_path: Path
) -> None:
    """A checkpoint whose history says 10 steps were spent by step 4: only 2 more fit."""
    cut = cut_after(whole_run, tmp_path / "cut", 4)
    state_file = cut / "checkpoints" / "checkpoint-4" / dp_state.STATE_FILE
    state = json.loads(state_file.read_text())
    (sigma, rate, steps), = state["history"]  # fmt: skip
    assert steps == 4
    state["history"] = [[sigma, rate, 10]]
    state_file.write_text(json.dumps(state))
    checkpoints.mark_complete(state_file.parent, 4)  # an edit the marker vouches for
    result = train(dp_job(tiny_model, qa_data, cut), progress=False)
    assert result.dp is not None and result.dp["stopped_at_budget"] is True
    assert result.steps == 6 and result.dp["steps"] == 6
    assert result.dp["epsilon_spent"] <= 8.0
    whole = json.loads((whole_run / "train_result.json").read_text())["dp"]
    fields = ("epsilon", "delta", "max_grad_norm", "rows", "expected_batch", "sample_rate")
    plan = PrivacyPlan(**{k: whole[k] for k in fields}, steps=12, noise_multiplier=sigma)
    assert Ledger(plan, [(sigma, rate, 12)]).spent(more_steps=1) > 8.0  # a 13th: over


@pytest.mark.parametrize(
    ("dp", "needle"),
    [
        (DPSettings(delta=1e-5), "without an `epsilon`"),
        (DPSettings(epsilon=8.0, delta=0.05), "`delta = 0.05` is not below 1/48"),
        (DPSettings(epsilon=1e-12, delta=1e-5), "no noise lets `tiny` train 12 steps"),
    ],
)
def test_budgets_no_noise_can_meet_are_refused(
    tiny_model: Path, qa_data: Path, tmp_path: Path, dp: DPSettings, needle: str
) -> None:
    with pytest.raises(StageError) as caught:
        train(dp_job(tiny_model, qa_data, tmp_path / "out", dp), progress=False)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "FM0837" and needle in diagnostic.message
    assert diagnostic.primary_span == DP_SPAN.to_span() and diagnostic.help
    assert not (tmp_path / "out").exists()
