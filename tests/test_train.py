import copy
import json

import pytest
import torch
from conftest import SPLIT, device_under_test, kill_then_resume

from mtlrec.data.splits import load_splits
from mtlrec.errors import MtlrecError
from mtlrec.evaluate.metrics import METRICS
from mtlrec.models import build_model
from mtlrec.models.layers import FeatureSpec
from mtlrec.provenance import resolve_device, set_seed
from mtlrec.train.loop import TrainConfig, fit
from mtlrec.train.objectives import BinaryCrossEntropy
from mtlrec.train.run import run_training

BCE, AUC = BinaryCrossEntropy(), METRICS["auc"]


def _setup(encoded, params, model_name="mmoe", seed=3):
    set_seed(seed)
    splits = load_splits(encoded, ["income", "marital"], seed, SPLIT)
    for name in ("train", "val", "test"):
        setattr(splits, name, getattr(splits, name).to(device_under_test()))
    model = build_model(model_name, FeatureSpec.from_schema(splits.schema), 2,
                        params["models"][model_name]).to(device_under_test())
    return splits, model


def test_same_params_and_seed_give_byte_identical_metrics(tmp_path, encoded_census, tiny_params):
    for run in ("a", "b"):
        run_training(tiny_params, "census", "shared_bottom", 7, encoded_census, tmp_path / run)
    first = (tmp_path / "a" / "metrics.json").read_bytes()
    assert first == (tmp_path / "b" / "metrics.json").read_bytes()
    assert (tmp_path / "a" / "model.pt").read_bytes() == (tmp_path / "b" / "model.pt").read_bytes()
    metrics = json.loads(first)
    assert set(metrics["test_auc"]) == {"income", "marital"}
    assert metrics["provenance"]["versions"]["torch"] == torch.__version__
    assert len(metrics["curves"]) == metrics["epochs_run"] == 2
    assert not (tmp_path / "a" / "resume.pt").exists()


def test_training_beats_chance_on_real_data(tmp_path, encoded_census, tiny_params):
    tiny_params["train"]["epochs"] = 3
    metrics = run_training(tiny_params, "census", "mmoe", 7, encoded_census, tmp_path)
    assert metrics["test_auc"]["income"] > 0.8 and metrics["test_auc"]["marital"] > 0.8


def test_interrupted_run_resumes_to_the_same_result(tmp_path, encoded_census, tiny_params):
    cfg = TrainConfig.from_params({**tiny_params["train"], "epochs": 3, "patience": 3})
    splits, model = _setup(encoded_census, tiny_params)
    fit(model, splits, cfg, 3, BCE, AUC)
    straight = model.state_dict()

    resume = tmp_path / "resume.pt"
    splits, model = _setup(encoded_census, tiny_params)
    fit(model, splits, TrainConfig.from_params({**vars(cfg), "epochs": 1}), 3, BCE, AUC,
        resume)  # "killed"
    splits, model = _setup(encoded_census, tiny_params)  # a fresh process
    state = fit(model, splits, cfg, 3, BCE, AUC, resume_path=resume)
    assert state.epoch == 3 and len(state.history) == 3
    for key, value in straight.items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_a_resumed_run_is_timed_over_every_process(tmp_path, encoded_census, tiny_params,
                                                  monkeypatch):
    """A run killed after epoch 1 and rerun: the same metrics as a straight run, and timing.json
    counts the killed process's epochs too (its seconds travel in resume.pt), so the wall time
    and samples/s of a resumed run are not those of its last process alone."""
    import mtlrec.train.loop as loop

    run_training(tiny_params, "census", "shared_bottom", 7, encoded_census, tmp_path / "straight")
    out = tmp_path / "resumed"
    killed = kill_then_resume(  # train_epoch(model, optimizer, splits, cfg, generator, epoch, ..)
        monkeypatch, loop, "train_epoch", 5, 2,
        lambda: run_training(tiny_params, "census", "shared_bottom", 7, encoded_census, out),
        out / "resume.pt", carried_seconds=1000.0)
    assert killed["epoch"] == 1 and killed["seconds"] > 0
    straight = (tmp_path / "straight" / "metrics.json").read_bytes()
    assert (out / "metrics.json").read_bytes() == straight
    timing = json.loads((out / "timing.json").read_text())
    assert 1000.0 < timing["wall_time_s"] < 1000.0 + 300
    rows = json.loads((out / "metrics.json").read_text())["rows"]["train"]
    samples_per_s = 2 * rows / timing["wall_time_s"]  # 2 epochs
    assert timing["train_samples_per_s"] == pytest.approx(samples_per_s, rel=1e-3)


def test_early_stopping_stops_and_restores_the_best(encoded_census, tiny_params):
    cfg = TrainConfig.from_params({**tiny_params["train"], "epochs": 10, "patience": 2,
                                   "lr": 1e-12})
    splits, model = _setup(encoded_census, tiny_params)
    state = fit(model, splits, cfg, 3, BCE, AUC)
    # with a vanishing learning rate nothing improves after epoch 1: stop at 1 + patience
    assert state.stopped_early and state.epoch == 3 and state.best_epoch == 1
    assert all(torch.equal(v, state.best_state[k]) for k, v in model.state_dict().items())


def test_deterministic_kernels_are_asked_for_on_a_gpu_only(tmp_path, encoded_census, tiny_params):
    """CPU runs keep torch's default kernels (their bits are the committed results'); a GPU run
    asks for deterministic ones (torch's atomics-based sums would otherwise vary run to run)."""
    from mtlrec.train.setup import start_run

    _, device = start_run(tiny_params["runtime"], 7, encoded_census, ["income"], SPLIT)
    assert torch.are_deterministic_algorithms_enabled() == (device.type == "cuda")


def test_a_device_the_machine_lacks_is_a_one_line_error():
    with pytest.raises(MtlrecError, match="runtime.device is 'cuda:99'"):
        resolve_device("cuda:99")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_display_flags_are_outside_every_hashed_section(tmp_path, encoded_census, tiny_params):
    """Progress bars on or off: the same bytes (display.progress is no input of a result)."""
    run_training(tiny_params, "census", "shared_bottom", 7, encoded_census, tmp_path / "quiet")
    tiny_params["display"]["progress"] = True
    run_training(tiny_params, "census", "shared_bottom", 7, encoded_census, tmp_path / "bars")
    for name in ("metrics.json", "model.pt"):
        assert (tmp_path / "quiet" / name).read_bytes() == (tmp_path / "bars" / name).read_bytes()


def test_resume_state_of_other_params_is_discarded_not_resumed(tmp_path, encoded_census,
                                                               tiny_params, capsys):
    """A resume.pt left by a run with other params must not be continued (#19): it is
    discarded with a note; one of the same run is resumed, with a note."""
    import shutil
    from unittest import mock

    killed = tmp_path / "killed"  # a run whose resume.pt survives (as after a kill)
    with mock.patch("pathlib.Path.unlink"):
        run_training(tiny_params, "census", "mmoe", 7, encoded_census, killed)
    assert (killed / "resume.pt").is_file()
    capsys.readouterr()

    changed = copy.deepcopy(tiny_params)
    changed["train"]["lr"] = 0.05
    run_training(changed, "census", "mmoe", 7, encoded_census, tmp_path / "fresh")
    for name, params in (("rerun", changed), ("same", tiny_params)):
        (tmp_path / name).mkdir()
        shutil.copy(killed / "resume.pt", tmp_path / name / "resume.pt")
        run_training(params, "census", "mmoe", 7, encoded_census, tmp_path / name)
        err = capsys.readouterr().err
        if name == "rerun":  # lr changed: the old state is not used
            assert "other params, data or code; starting over" in err and "resuming" not in err
            assert ((tmp_path / "rerun" / "model.pt").read_bytes()
                    == (tmp_path / "fresh" / "model.pt").read_bytes())
        else:
            assert "resuming after epoch 2" in err
            assert ((tmp_path / "same" / "model.pt").read_bytes()
                    == (killed / "model.pt").read_bytes())


@pytest.mark.parametrize("lr", [1e5, 1e9])
def test_divergence_stops_the_run_with_one_line(tmp_path, encoded_census, tiny_params, lr):
    tiny_params["train"].update(lr=lr, epochs=2)
    with pytest.raises(MtlrecError, match=r"diverged") as error:
        run_training(tiny_params, "census", "mmoe", 7, encoded_census, tmp_path)
    assert len(str(error.value).splitlines()) == 1
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "model.pt").exists()


def test_a_log_file_gets_one_plain_line_per_epoch(tmp_path, encoded_census, tiny_params, capsys):
    """Not a terminal (a rule's log): no tqdm escape codes, one readable line per epoch."""
    tiny_params["display"]["progress"] = True
    run_training(tiny_params, "census", "shared_bottom", 7, encoded_census, tmp_path)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if ": epoch " in line]
    assert [line.split(": epoch ")[1].split()[0] for line in lines] == ["1/2", "2/2"]
    assert "val auc" in lines[0] and "\r" not in err and "\x1b[" not in err


def test_set_overrides_one_key_and_is_validated(capsys):
    from conftest import REPO

    from mtlrec.cli import main

    params = str(REPO / "params.yaml")
    assert main(["check", "--params", params, "--set", "train.lr=0.01",
                 "--set", "models.mmoe.expert_hidden=[8, 4]"]) == 0
    out = capsys.readouterr().out
    assert "lr: 0.01" in out and "- 8" in out
    assert main(["check", "--params", params, "--set", "train.epochs=many"]) == 2
    assert "train.epochs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and "mtlrec 0.1.0" in capsys.readouterr().out
