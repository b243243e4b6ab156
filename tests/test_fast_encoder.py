"""utils/retrieval/fast_encoder.py: the Paddle Inference (oneDNN) encoder gives the dynamic graph's codes exactly and
its raw outputs within float rounding (tests/tolerances.py), in evaluation (evaluation.evaluate, same mAP) and in
predict.py; the layer it was made from stays a dynamic-graph layer; --encoder resolves by device."""
import errno
import logging

import numpy as np
import paddle
import pytest

import predict
import tolerances
from test_predict import toy_args, toy_checkpoint
from utils.datasets.image_list import ImageList, build_transform
from utils.hashing.codes import binarize
from utils.retrieval import fast_encoder
from utils.runtime import dist
from utils.runtime.errors import UsageError, user_message
from utils.train import build, evaluation
from utils.train.options import parse_args


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    """A small toy set, a random standardised 64-bit HashNet (as tests/test_predict.py makes them), its checkpoint
    and the first 32 database images (72 -> 64 px) with the dynamic graph's outputs on them; the dynamic graph's fc7
    and its largest difference from a oneDNN predictor's, in one batch and in batches of 5 (the shapes below)."""
    base = tmp_path_factory.mktemp("fast_encoder")
    root, model, ckpt = toy_checkpoint(base, 64, seed=3)
    dataset = ImageList(root, root / "database.txt", build_transform(False, 72, 64))
    images = np.stack([dataset[i][0] for i in range(32)])
    with paddle.no_grad():
        reference = model(paddle.to_tensor(images)).numpy()
    fc7, fc7_difference = tolerances.measured_fc7_difference(model, images, batch_sizes=(None, 5))
    return {"root": root, "model": model, "ckpt": ckpt, "images": images, "reference": reference, "base": base,
            "fc7": fc7, "fc7_difference": fc7_difference}


def assert_same_encoding(raw, reference, toy_model, what, model=None):
    """Raw outputs within float rounding of the dynamic graph's: the fc7 difference measured between the engines,
    propagated through the standardisation and the hash layer of `model` (default the fixture's), plus that layer's
    own rounding (tests/tolerances.py); exactly the same ±1 codes, on codes that differ between images."""
    tolerance = tolerances.output_tolerance(model or toy_model["model"], toy_model["fc7"], toy_model["fc7_difference"])
    tolerances.assert_outputs_agree(raw, reference, tolerance, what)


def test_predictor_codes_equal_the_dynamic_graph(toy_model):
    encoder = fast_encoder.layer_predictor(toy_model["model"], 64)
    assert isinstance(encoder, fast_encoder.Predictor)
    assert_same_encoding(encoder(toy_model["images"]), toy_model["reference"], toy_model, "predictor, batch of 32")
    # any batch size, a CPU tensor as input too
    parts = [encoder(paddle.to_tensor(toy_model["images"][i:i + 5])) for i in range(0, 32, 5)]
    assert_same_encoding(np.concatenate(parts), toy_model["reference"], toy_model, "predictor, batches of 5")
    with pytest.raises(ValueError, match="uint8"):
        encoder(toy_model["images"].astype("float32"))


def test_the_layer_stays_dynamic_and_a_new_predictor_takes_its_new_weights(toy_model, tmp_path):
    from models import HashNet
    model = HashNet(64)
    model.set_state_dict(toy_model["model"].state_dict())
    model.eval()
    before = fast_encoder.model_encoder(model, "inference", 64)
    assert type(model.forward).__name__ == "method" and model.forward.__func__ is HashNet.forward  # not converted
    # training goes on with the layer: its weights change, and gradients still reach them
    model.train()
    loss = model(paddle.to_tensor(toy_model["images"][:4])).sum()
    loss.backward()
    assert model.hash_layer.weight.grad is not None
    with paddle.no_grad():
        model.hash_layer.weight.set_value(-model.hash_layer.weight)
    model.eval()
    with paddle.no_grad():
        changed = model(paddle.to_tensor(toy_model["images"])).numpy()
    assert not np.array_equal(binarize(changed), binarize(toy_model["reference"]))
    # the same backbone, so the same fc7 difference; the hash layer's tolerance is that of the negated weights
    assert_same_encoding(fast_encoder.model_encoder(model, "inference", 64)(toy_model["images"]), changed, toy_model,
                         "new predictor of the changed layer", model)
    assert_same_encoding(before(toy_model["images"]), toy_model["reference"], toy_model,
                         "predictor made before the change")  # it kept its weights


def test_encoder_choice_by_device_and_job_size():
    assert fast_encoder.resolve_encoder("auto", "cpu") == "inference"  # a job of unknown size
    assert fast_encoder.resolve_encoder("auto", "gpu:0") == "dygraph"
    # auto on the CPU: a predictor from 256 images of 64 px on (about the same pixels: 21 of 224 px)
    assert fast_encoder.PREDICTOR_MIN_PIXELS == 256 * 64 * 64
    for images, size, expected in ((255, 64, "dygraph"), (256, 64, "inference"), (20, 224, "dygraph"),
                                   (21, 224, "inference")):
        assert fast_encoder.resolve_encoder("auto", "cpu", images, size) == expected, (images, size)
        assert fast_encoder.resolve_encoder("auto", "gpu:0", images, size) == "dygraph"
        assert fast_encoder.resolve_encoder("inference", "cpu", images, size) == "inference"
    assert fast_encoder.resolve_encoder("dygraph", "cpu") == "dygraph"
    assert fast_encoder.resolve_encoder("inference", "gpu:1") == "inference"
    with pytest.raises(UsageError, match=r"--encoder must be one of auto, dygraph, inference, got 'fast'"):
        fast_encoder.resolve_encoder("fast", "cpu")
    identity = paddle.nn.Identity()
    assert fast_encoder.model_encoder(identity, "dygraph", 64) is identity  # the dynamic graph is the model itself


def eval_toy_cfg(eval_toy, tmp_path, encoder):
    return parse_args(["--dataset", "toy", "--list-dir", str(eval_toy["list_dir"]), "--data-path",
                       str(eval_toy["data_path"]), "--bit", "32", "--num_workers", "0", "--output-dir",
                       str(tmp_path), "--encoder", encoder])


def test_evaluation_codes_and_map_equal_the_dynamic_graph(eval_toy, tmp_path, monkeypatch):
    from models import HashNet
    dist.select_device("cpu")
    results = {}
    job = (16 + 48) * 64 * 64  # eval_toy's queries and database, 64 px: the pixels an evaluation encodes
    for choice, threshold in (("dygraph", None), ("inference", None), ("auto", job + 1), ("auto at", job)):
        if threshold:  # auto: the dynamic graph below the threshold, a predictor from it on
            monkeypatch.setattr(fast_encoder, "PREDICTOR_MIN_PIXELS", threshold)
        cfg = eval_toy_cfg(eval_toy, tmp_path, choice.split()[0])
        _, loaders = build.build_data(cfg)
        if not results:  # one random standardised model for every encoder
            paddle.seed(0)
            with paddle.utils.unique_name.guard():
                model = HashNet(32, init="kaiming")
            build.fit_feature_standardization(model, loaders["train_eval"], logging.getLogger("test_fast_encoder"))
        codes = None
        if not threshold:  # auto is checked by what evaluate reports: its encoder and mAP
            encoder = fast_encoder.model_encoder(model, choice, cfg.crop_size)
            codes = [evaluation.encode(model, loaders[split], encoder=encoder)[0] for split in ("test", "database")]
        results[choice] = codes, evaluation.evaluate(model, loaders, cfg)
    (dy_codes, dygraph), (fast_codes, fast) = results["dygraph"], results["inference"]
    for a, b in zip(dy_codes, fast_codes):
        np.testing.assert_array_equal(a, b)
    assert len(np.unique(dy_codes[1], axis=0)) > 10  # codes that differ between images: equality means something
    assert fast["map"] == dygraph["map"] and fast["pr_curve"] == dygraph["pr_curve"]
    assert [results[choice][1]["encoder"] for choice in ("dygraph", "inference", "auto", "auto at")] == \
        ["dygraph", "inference", "dygraph", "inference"]
    assert results["auto"][1]["map"] == results["auto at"][1]["map"] == dygraph["map"]
    assert dygraph["encoder_setup_time"] < fast["encoder_setup_time"]  # the predictor is made, not the model


def test_predict_encoders_agree(toy_model, tmp_path):
    encoders = {}
    for choice in ("dygraph", "inference"):
        args = predict.parse_args(toy_args(toy_model, tmp_path / choice, "--img", str(tmp_path), "--encoder",
                                           choice))
        transform, encode_batch, encode_database = predict.build_encoders(args)
        dataset = ImageList(toy_model["root"], toy_model["root"] / "database.txt", transform)
        encoders[choice] = encode_batch(toy_model["images"]), encode_database(dataset)
    (dy_raw, dy_codes), (fast_raw, fast_codes) = encoders["dygraph"], encoders["inference"]
    assert_same_encoding(dy_raw, toy_model["reference"], toy_model, "predict.py, dygraph")
    assert_same_encoding(fast_raw, toy_model["reference"], toy_model, "predict.py, inference")
    np.testing.assert_array_equal(fast_codes, dy_codes)
    assert len(fast_codes) == 34 and len(np.unique(fast_codes, axis=0)) > 1


def test_auto_falls_back_to_dygraph_when_the_predictor_fails(monkeypatch, capsys):
    """--encoder auto encodes in the dynamic graph, with one warning, when Paddle Inference cannot take the model;
    --encoder inference says why and fails."""
    layer = paddle.nn.Linear(4, 2)

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this op\nsecond line")

    monkeypatch.setattr(fast_encoder, "layer_predictor", broken)
    assert fast_encoder.model_encoder(layer, "auto", 64) is layer
    warning = capsys.readouterr().err
    assert "--encoder auto: Paddle Inference could not take Linear (RuntimeError: no kernel for this op)" in warning
    assert "second line" not in warning and fast_encoder.encoder_kind(layer) == "dygraph"
    with pytest.raises(RuntimeError, match="no kernel"):
        fast_encoder.model_encoder(layer, "inference", 64)


class PixelsToCode(paddle.nn.Layer):
    """The smallest layer a predictor takes: uint8 [N, 3, 2, 2] pixels -> 8 outputs."""

    def __init__(self):
        super().__init__()
        self.fc = paddle.nn.Linear(12, 8)

    def forward(self, x):
        return self.fc(paddle.flatten(paddle.cast(x, "float32"), 1))


def free_space(monkeypatch, *free_bytes):
    """shutil.disk_usage answering `free_bytes` in turn (the last one from then on)."""
    import collections
    import shutil
    answers = list(free_bytes)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 ** 12, 0, answers.pop(0) if len(answers) > 1
                                                                                   else answers[0]))


def test_a_full_temporary_folder_is_told_before_the_weights_are_written(monkeypatch, capsys):
    """paddle.jit.save cuts its weights file on a full disk without a word: the room is checked first, and the error
    names the file, the size and TMPDIR; --encoder auto warns so and encodes in the dynamic graph."""
    layer = PixelsToCode()
    needed = fast_encoder.weights_bytes(layer)
    assert needed == (12 * 8 + 8) * 4
    free_space(monkeypatch, needed - 1)
    with pytest.raises(OSError) as caught:
        fast_encoder.layer_predictor(layer, 2)
    message = user_message(caught.value)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename.endswith("inference.pdiparams")
    assert "no space left on the device" in message and "needs at least 416 bytes" in message
    assert "point TMPDIR at a folder with room" in message
    assert fast_encoder.model_encoder(layer, "auto", 2) is layer
    assert "could not take PixelsToCode (no space left on the device" in capsys.readouterr().err


def test_a_disk_that_fills_while_the_weights_are_written_is_told_not_loaded(monkeypatch):
    """A disk left full by paddle.jit.save may hold a cut weights file (Paddle does not say), which a predictor loads
    as garbage: the save is an ENOSPC error instead; with room left after the save the predictor is made."""
    layer = PixelsToCode()
    free_space(monkeypatch, 10 ** 9, fast_encoder.FULL_DISK_BYTES - 1)
    with pytest.raises(OSError) as caught:
        fast_encoder.layer_predictor(layer, 2)
    assert caught.value.errno == errno.ENOSPC and "needs at least 416 bytes" in user_message(caught.value)
    free_space(monkeypatch, 10 ** 9, fast_encoder.FULL_DISK_BYTES)
    pixels = np.arange(12, dtype=np.uint8).reshape(1, 3, 2, 2)
    with paddle.no_grad():
        expected = layer(paddle.to_tensor(pixels)).numpy()
    np.testing.assert_allclose(fast_encoder.layer_predictor(layer, 2)(pixels), expected, rtol=1e-5, atol=1e-5)


def test_an_export_to_a_full_disk_names_the_export_and_its_flag(monkeypatch, tmp_path):
    """export_model.py on a full disk: one line naming the exported file (not its temporary folder) and
    --save-inference-dir; nothing is left in the export folder."""
    import export_model
    free_space(monkeypatch, 10)
    with pytest.raises(OSError) as caught:
        export_model.export_inference_model(PixelsToCode(), tmp_path / "inference_8", 8, 4, 2)
    message = user_message(caught.value)
    assert caught.value.filename == str(tmp_path / "inference_8" / fast_encoder.PARAMS_FILE)
    assert "no space left" in message and "export elsewhere (--save-inference-dir)" in message
    assert list(tmp_path.iterdir()) == []
