"""Every file a run writes and later reads is verified (issue 30, point 1;
docs/training.md#checksums-and-damaged-files): a flipped byte in a best model, a last checkpoint, a frozen backbone or
an export is refused naming the file, what it holds and an intact one; a damaged data or code cache is rebuilt saying
so; an empty or truncated checkpoint is one line; --resume auto continues from the kept previous checkpoint; files
without a checksum load with a note."""
import json
import shutil

import numpy as np
import paddle
import pytest

from conftest import run_cli, toy_args
from deploy.inference_python.infer import read_export_meta
from utils.datasets import cache as datacache
from utils.datasets.image_list import ImageList, build_transform
from utils.retrieval import search as retrieval
from utils.runtime import integrity
from utils.runtime.errors import UsageError
from utils.train import checkpoint

TRAIN = ("--eval_epoch", "1", "--bit", "16", "--de_step", "1", "--learning-rate", "0.006", "--encoder", "inference")


def flip_byte(path, at=None):
    """Invert one byte (the middle one by default): the size stays, the content does not."""
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if at is None else at
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def best_holds(run):
    return json.loads((run / "model_best_16.pdparams.sha256").read_text())["holds"]


def copy_run(run, tmp_path, name):
    target = tmp_path / name
    shutil.copytree(run, target)
    (target / "run.lock").unlink(missing_ok=True)
    return target


@pytest.fixture(scope="module")
def three_epochs(small_toy, tmp_path_factory):
    """A 3-epoch toy run: last_16.pdckpt (epoch 3), last_16.prev.pdckpt (epoch 2), model_best, frozen backbone."""
    run = tmp_path_factory.mktemp("integrity") / "three"
    run_cli(["main_single_gpu.py", *toy_args(small_toy, run, "--epoch", "3", *TRAIN)])
    return run


# ------------------------------------------------------------------------------------------------------- the sidecar
def test_a_sidecar_records_what_each_file_holds_and_the_previous_checkpoint_is_kept(three_epochs):
    for name in ("last_16.pdckpt", "last_16.prev.pdckpt", "model_best_16.pdparams", "model_best_16.pdopt",
                 "frozen_backbone_16.pdparams"):
        record = json.loads((three_epochs / f"{name}.sha256").read_text())
        assert record["sha256"] == integrity.sha256_of(three_epochs / name)
        assert record["size"] == (three_epochs / name).stat().st_size
    holds = lambda name: json.loads((three_epochs / f"{name}.sha256").read_text())["holds"]  # noqa: E731
    assert holds("last_16.pdckpt") == "the last checkpoint of run three, epoch 3"
    assert holds("last_16.prev.pdckpt") == "the last checkpoint of run three, epoch 2"
    assert holds("model_best_16.pdparams").startswith("the best model of run three, epoch ")
    assert holds("frozen_backbone_16.pdparams") == "the frozen backbone of run three"
    assert paddle.load(str(three_epochs / "last_16.prev.pdckpt"))["epoch"] == 2
    assert paddle.load(str(three_epochs / "last_16.pdckpt"))["epoch"] == 3


def test_keep_previous_keeps_one_intact_generation_and_drops_a_damaged_one(tmp_path, capsys):
    path = tmp_path / "last_8.pdckpt"
    for version in (b"one", b"two", b"three"):
        integrity.write_checked(path, lambda tmp, v=version: open(tmp, "wb").write(v), f"version {version}",
                                keep_previous=True)
    previous = integrity.previous_path(path)
    assert path.read_bytes() == b"three" and previous.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_8.pdckpt", "last_8.pdckpt.sha256",
                                                          "last_8.prev.pdckpt", "last_8.prev.pdckpt.sha256"]
    assert integrity.is_intact(path) and integrity.is_intact(previous)
    flip_byte(path, 0)  # a damaged last is not kept as "previous": the intact previous stays
    integrity.write_checked(path, lambda tmp: open(tmp, "wb").write(b"four"), "version 4", keep_previous=True)
    assert path.read_bytes() == b"four" and previous.read_bytes() == b"two"


# ------------------------------------------------------------------------------------------------------ checkpoints
def test_a_flipped_byte_in_the_best_model_is_refused_by_eval_naming_it_and_an_intact_checkpoint(
        three_epochs, small_toy, tmp_path):
    run = copy_run(three_epochs, tmp_path, "damaged")
    flip_byte(run / "model_best_16.pdparams")
    proc = run_cli(["main_single_gpu.py", "--eval", "--pretrained", run / "model_best_16.pdparams",
                    *toy_args(small_toy, tmp_path / "eval", "--bit", "16")], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert error_lines(proc) == [
        f"error: {run / 'model_best_16.pdparams'} ({best_holds(run)}) is damaged: its sha256 differs from the one "
        f"recorded in model_best_16.pdparams.sha256; use {run / 'last_16.pdckpt'} instead (the last checkpoint of run "
        f"three, epoch 3)"]


def test_a_flipped_byte_in_the_last_checkpoint_is_refused_naming_the_previous_one(three_epochs, tmp_path):
    run = copy_run(three_epochs, tmp_path, "damaged")
    flip_byte(run / "last_16.pdckpt")
    with pytest.raises(UsageError) as error:
        checkpoint.load(run / "last_16.pdckpt", "resume checkpoint (--resume)")
    message = str(error.value)
    assert message.startswith(f"{run / 'last_16.pdckpt'} (the last checkpoint of run three, epoch 3) is damaged")
    assert message.endswith(f"use {run / 'last_16.prev.pdckpt'} instead (the last checkpoint of run three, epoch 2)")


def test_a_flipped_byte_in_the_frozen_backbone_is_refused_naming_it(three_epochs, tmp_path):
    run = copy_run(three_epochs, tmp_path, "damaged")
    flip_byte(run / "frozen_backbone_16.pdparams")
    with pytest.raises(UsageError) as error:
        checkpoint.load_model_state(run / "model_best_16.pdparams")
    assert str(error.value) == (
        f"{run / 'frozen_backbone_16.pdparams'} (the frozen backbone of run three) is damaged: its sha256 differs from "
        f"the one recorded in frozen_backbone_16.pdparams.sha256; every checkpoint of its run needs it: restore it "
        f"from a copy of the run folder, or retrain")


def test_an_empty_best_model_is_one_line_in_predict(three_epochs, tmp_path, toy_root):
    run = copy_run(three_epochs, tmp_path, "empty")
    (run / "model_best_16.pdparams").write_bytes(b"")
    image = toy_root / (toy_root / "test.txt").read_text().split()[0]
    proc = run_cli(["predict.py", "--pretrained", run, "--img", image, "--save_path", tmp_path / "out"], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "EOFError" not in proc.stderr
    assert error_lines(proc) == [f"error: {run / 'model_best_16.pdparams'} ({best_holds(run)}) is "
                                 f"empty (0 bytes), {(three_epochs / 'model_best_16.pdparams').stat().st_size} were "
                                 f"written; use {run / 'last_16.pdckpt'} instead (the last checkpoint of run three, "
                                 f"epoch 3)"]


def test_a_truncated_checkpoint_is_one_line_with_or_without_its_sidecar(three_epochs, small_toy, tmp_path):
    run = copy_run(three_epochs, tmp_path, "truncated")
    with open(run / "last_16.pdckpt", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(UsageError, match=r"last_16\.pdckpt \(the last checkpoint of run three, epoch 3\) is "
                                         r"truncated or grown: 1000 bytes, \d+ were written; use .*last_16\.prev"):
        checkpoint.load(run / "last_16.pdckpt")
    (run / "last_16.pdckpt.sha256").unlink()  # no sidecar to compare with: Paddle's parse error, as one line
    proc = run_cli(["main_single_gpu.py", *toy_args(small_toy, run, "--epoch", "4", *TRAIN), "--resume",
                    run / "last_16.pdckpt"], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    [line] = error_lines(proc)
    assert line.startswith(f"error: {run / 'last_16.pdckpt'} (resume checkpoint (--resume)) cannot be read (")
    assert "can not parse" in line and line.endswith(f"use {run / 'last_16.prev.pdckpt'} instead (the last "
                                                     f"checkpoint of run three, epoch 2)")


def test_resume_auto_over_a_damaged_last_checkpoint_continues_from_the_previous_one_exactly(
        three_epochs, small_toy, tmp_path):
    intact, damaged = copy_run(three_epochs, tmp_path, "intact"), copy_run(three_epochs, tmp_path, "damaged")
    flip_byte(damaged / "last_16.pdckpt")
    outputs = {}
    for run in (intact, damaged):
        proc = run_cli(["main_single_gpu.py", *toy_args(small_toy, run, "--epoch", "4", *TRAIN), "--resume", "auto"])
        outputs[run] = proc.stdout + proc.stderr
    assert (f"--resume auto: {damaged / 'last_16.pdckpt'} is damaged: its sha256 differs from the one recorded in "
            f"last_16.pdckpt.sha256; continuing from the previous checkpoint {damaged / 'last_16.prev.pdckpt'} (the "
            f"last checkpoint of run three, epoch 2)") in outputs[damaged]
    assert "continuing from the previous" not in outputs[intact]
    final = {run: json.loads((run / "metrics.json").read_text())["final"]["map"] for run in (intact, damaged)}
    assert final[damaged] == final[intact]
    states = {run: paddle.load(str(run / "last_16.pdckpt")) for run in (intact, damaged)}
    assert states[damaged]["epoch"] == states[intact]["epoch"] == 4
    for name, value in states[intact]["model"].items():
        np.testing.assert_array_equal(states[damaged]["model"][name].numpy(), value.numpy(), err_msg=name)
    rows = [json.loads(line)["epoch"] for line in (damaged / "epochs.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3, 4]
    assert paddle.load(str(damaged / "last_16.prev.pdckpt"))["epoch"] == 3  # the damaged one was not kept


def test_files_without_a_checksum_load_with_one_note(three_epochs, tmp_path, capsys):
    run = copy_run(three_epochs, tmp_path, "old")
    for sidecar in run.glob("*.sha256"):
        sidecar.unlink()
    state = checkpoint.load_model_state(run / "model_best_16.pdparams")
    assert "hash_layer.weight" in state and len(state) > 10  # the backbone joined
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {run / name} ({what}): no checksum: written before checksums were recorded (or its "
                     f"write was interrupted); not verified" for name, what in (
                         ("model_best_16.pdparams", "checkpoint (--pretrained)"),
                         ("frozen_backbone_16.pdparams",
                          f"the frozen backbone {run / 'model_best_16.pdparams'} was trained with"))]


# ------------------------------------------------------------------------------------------ exports and caches
def test_a_flipped_byte_in_an_export_is_refused_naming_the_file(three_epochs, tmp_path):
    out = tmp_path / "export"
    run_cli(["export_model.py", "--pretrained", three_epochs, "--save-inference-dir", out])
    read_export_meta(out)
    flip_byte(out / "inference.pdiparams")
    with pytest.raises(UsageError, match=r"inference\.pdiparams changed after the export \(sha256 differs"):
        read_export_meta(out)


def test_a_flipped_byte_in_a_data_cache_rebuilds_it_saying_so(toy_root, tmp_path, capsys):
    dataset = ImageList(toy_root, toy_root / "test.txt", build_transform(False, 72, 64))
    dataset.paths, dataset.labels = dataset.paths[:6], dataset.labels[:6]
    datacache.cached_eval_dataset(dataset, tmp_path, 72, 64)
    npy, sidecar = datacache.cache_files(tmp_path, dataset, "eval72-64")[:2]
    intact = np.load(npy)
    capsys.readouterr()
    flip_byte(npy, npy.stat().st_size - 10)
    cached = datacache.cached_eval_dataset(dataset, tmp_path, 72, 64)
    assert (f"data cache {npy.name} (damaged: the sha256 of {npy.name} differs from the one recorded in "
            f"{sidecar.name}): building") in capsys.readouterr().err
    np.testing.assert_array_equal(np.stack([cached[i][0] for i in range(6)]), intact)
    # a cache built before digests were recorded: used, with one note
    record = json.loads(sidecar.read_text())
    del record["file_sha256"]
    sidecar.write_text(json.dumps(record))
    datacache.cached_eval_dataset(dataset, tmp_path, 72, 64)
    err = capsys.readouterr().err
    assert "building" not in err and "no checksum: written before checksums were recorded" in err


def test_a_flipped_byte_in_the_database_code_cache_recomputes_it(tmp_path, capsys):
    identity = {"format": retrieval.CACHE_FORMAT, "bit": 16, "num_items": 5, "preprocess": {},
                "checkpoint": {"path": "c", "sha256": "1" * 64}, "database_list": {"path": "l", "sha256": "2" * 64}}
    codes = np.sign(np.random.default_rng(0).standard_normal((5, 16))).astype(np.float32)
    calls = []
    retrieval.database_codes(tmp_path, identity, lambda: calls.append(1) or codes)
    npy = retrieval.cache_paths(tmp_path, 16)[0]
    flip_byte(npy, npy.stat().st_size - 3)
    again = retrieval.database_codes(tmp_path, identity, lambda: calls.append(1) or codes)
    assert len(calls) == 2 and f"database code cache {npy} changed after its sidecar was written (sha256 differs); " \
                               f"recomputing" in capsys.readouterr().err
    np.testing.assert_array_equal(again, codes)
