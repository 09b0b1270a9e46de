"""The recognizer artefact (encoder + linear head + RecognizerConfig): save / load round trip with
bit-identical logits, the config.json schema, whole-directory writes, and one-line
CheckpointErrors for every missing, corrupt or mismatched file."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cross4d_core import __version__
from cross4d_core.errors import CheckpointError, FileError
from cross4d_core.models import (
    Point4DConfig,
    Point4DEncoder,
    Recognizer,
    RecognizerConfig,
    RecognizerOutput,
    RecognizerProvenance,
)
from cross4d_core.training import save_encoder

LABELS = ["wave", "bow", "kick"]


def make_config(**overrides) -> RecognizerConfig:
    values = dict(model_config=Point4DConfig.tiny(), label_names=LABELS, num_frames=4, num_points=64,
                  model_id="point4d-test", provenance=RecognizerProvenance(dataset="/data/unit", probe_l2=1e-3,
                                                                           train_accuracy=1.0, test_accuracy=0.5))
    values.update(overrides)
    return RecognizerConfig(**values)


def make_recognizer(seed: int = 0, **overrides) -> Recognizer:
    torch.manual_seed(seed)
    return Recognizer(make_config(**overrides)).eval()


@pytest.fixture
def saved(tmp_path) -> tuple[Recognizer, Path]:
    recognizer = make_recognizer()
    return recognizer, recognizer.save_pretrained(tmp_path / "recognizer")


def clips(batch: int = 2, frames: int = 4, points: int = 64) -> torch.Tensor:
    return torch.rand(batch, frames, points, 3, generator=torch.Generator().manual_seed(1)) * 2.0


def test_save_and_load_give_bit_identical_logits(saved):
    recognizer, directory = saved
    loaded = Recognizer.from_pretrained(directory)
    assert not loaded.training and loaded.config == recognizer.config
    with torch.no_grad():
        expected, got = recognizer(clips()), loaded(clips())
    assert isinstance(got, RecognizerOutput) and got.logits.shape == (2, 3) and got.clip_feature.shape == (2, 32)
    assert torch.equal(got.logits, expected.logits) and torch.equal(got.clip_feature, expected.clip_feature)
    assert torch.equal(got.encoder_output.token_features, expected.encoder_output.token_features)
    # The head on an encoder output (the node's cached path) is the same function as forward.
    with torch.no_grad():
        assert torch.equal(loaded.classify(loaded.encoder(clips())).logits, got.logits)


def test_config_json_schema_and_the_weights_file(saved):
    recognizer, directory = saved
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".")]  # no temporaries left
    config = json.loads((directory / "config.json").read_text())
    assert config == {
        "format": "cross4d-recognizer", "format_version": 1, "model_config": Point4DConfig.tiny().to_dict(),
        "label_names": LABELS, "num_frames": 4, "num_points": 64, "model_id": "point4d-test",
        "provenance": {"source_checkpoint": None, "objective": None, "teacher": None, "pretrain_data": None,
                       "dataset": "/data/unit", "normalisation": {}, "probe_l2": 1e-3, "train_accuracy": 1.0,
                       "test_accuracy": 0.5, "created_by": f"cross4d {__version__}"},
    }
    assert RecognizerConfig.from_dict(config) == recognizer.config
    assert RecognizerConfig.from_pretrained(directory) == recognizer.config
    with safe_open(directory / "model.safetensors", "pt") as f:  # a safetensors file, not a pickle
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert shapes == {k: tuple(v.shape) for k, v in recognizer.state_dict().items()}
    assert shapes["head.weight"] == (3, 32) and shapes["head.bias"] == (3,)
    assert all(k.startswith(("encoder.", "head.")) for k in shapes)


def test_save_replaces_an_earlier_recognizer_and_refuses_other_directories(saved, tmp_path):
    _, directory = saved
    other = make_recognizer(seed=1, label_names=["a", "b"], model_id="second")
    other.save_pretrained(directory)
    loaded = Recognizer.from_pretrained(directory)
    assert loaded.config.label_names == ["a", "b"] and loaded.head.out_features == 2
    with torch.no_grad():
        assert torch.equal(loaded(clips()).logits, other(clips()).logits)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "probe_results.json").write_text("{}")
    with pytest.raises(FileError, match=r"run: exists and is not a recognizer directory \(holds "
                                        r"\['probe_results.json'\]\); not replaced"):
        other.save_pretrained(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["probe_results.json"]


def _edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


def _corrupt_cases():
    def truncate(d):
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[: len(data) // 2])

    def drop_tensor(d):
        tensors = load_file(d / "model.safetensors")
        del tensors["head.bias"]
        save_file(tensors, d / "model.safetensors")

    return [
        ("missing config", lambda d: (d / "config.json").unlink(), "config.json", "missing"),
        ("config not JSON", lambda d: (d / "config.json").write_text("{"), "config.json", "not valid JSON"),
        ("config not an object", lambda d: (d / "config.json").write_text("[1]"), "config.json",
         "not a recognizer config: format None"),
        ("pretrained encoder dir", lambda d: _edit_config(d, format=None, format_version=None), "config.json",
         "not a recognizer config: format None, expected 'cross4d-recognizer' (a `cross4d pretrain` directory"),
        ("other format", lambda d: _edit_config(d, format="cross4d-dataset"), "config.json",
         "not a recognizer config: format 'cross4d-dataset'"),
        ("newer version", lambda d: _edit_config(d, format_version=2), "config.json",
         f"recognizer format_version 2; this cross4d ({__version__}) reads 1"),
        ("unknown key", lambda d: _edit_config(d, colour="red"), "config.json", "config: unknown keys ['colour']"),
        ("missing key", lambda d: _edit_config(d, num_frames=None), "config.json",
         "config: missing keys ['num_frames']"),
        ("unknown provenance key", lambda d: _edit_config(d, provenance={"epochs": 3}), "config.json",
         "provenance: unknown keys ['epochs']"),
        ("bad model config", lambda d: _edit_config(d, model_config={"hidden_size": 7}), "config.json",
         "Point4DConfig.hidden_size (7) must be divisible by num_heads (4)"),
        ("too few points", lambda d: _edit_config(d, num_points=8), "config.json",
         "RecognizerConfig.num_points (8) must be >= the encoder's sa1_centroids (16)"),
        ("empty labels", lambda d: _edit_config(d, label_names=[]), "config.json",
         "RecognizerConfig.label_names must be distinct non-empty strings, got []"),
        ("missing weights", lambda d: (d / "model.safetensors").unlink(), "model.safetensors", "missing"),
        ("truncated weights", truncate, "model.safetensors", "corrupt safetensors file"),
        ("more labels than head rows", lambda d: _edit_config(d, label_names=LABELS + ["jump"]), "model.safetensors",
         "does not match the model: size mismatch for head.weight: copying a param with shape torch.Size([3, 32])"),
        ("other width", lambda d: _edit_config(d, model_config={**Point4DConfig.tiny().to_dict(), "hidden_size": 64}),
         "model.safetensors", "does not match the model: size mismatch for"),
        ("missing tensor", drop_tensor, "model.safetensors", "does not match the model: missing keys ['head.bias']"),
    ]


@pytest.mark.parametrize("name, corrupt, file, reason", _corrupt_cases(), ids=[c[0] for c in _corrupt_cases()])
def test_a_broken_directory_is_one_checkpoint_error_line_naming_the_file(saved, name, corrupt, file, reason):
    _, directory = saved
    corrupt(directory)
    with pytest.raises(CheckpointError) as error:
        Recognizer.from_pretrained(directory)
    message = str(error.value)
    assert "\n" not in message, message
    assert message.startswith(f"{directory / file}: {reason}"), message


def test_a_missing_directory_or_a_file_is_named(tmp_path):
    nowhere = re.escape(str(tmp_path / "nowhere"))
    with pytest.raises(CheckpointError, match=f"^{nowhere}: no such recognizer directory$"):
        Recognizer.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "file").write_text("")
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(tmp_path / 'file'))}: not a directory"):
        RecognizerConfig.from_pretrained(tmp_path / "file")


def test_a_pretrained_encoder_directory_is_not_a_recognizer(tmp_path):
    encoder = Point4DEncoder(Point4DConfig.tiny())
    save_encoder(tmp_path, encoder, model_id="point4d-dense")
    with pytest.raises(CheckpointError, match="config.json: not a recognizer config: format None"):
        Recognizer.from_pretrained(tmp_path)


def test_inputs_and_parts_are_checked():
    recognizer = make_recognizer()
    with pytest.raises(ValueError, match=r"points must be \[B, 4, 64, 3\] \(the recognizer's num_frames x "
                                         r"num_points\), got \[2, 5, 64, 3\]"):
        recognizer(clips(frames=5))
    with pytest.raises(ValueError, match="the encoder's config"):
        Recognizer(make_config(), encoder=Point4DEncoder(Point4DConfig.tiny(hidden_size=64)))
    with pytest.raises(ValueError, match=r"head is Linear\(32, 2\); the config needs Linear\(32, 3\)"):
        Recognizer(make_config(), head=torch.nn.Linear(32, 2))
    for bad in (dict(label_names=["a", "a"]), dict(label_names=["a", ""]), dict(num_frames=0),
                dict(num_points=True), dict(model_config={"hidden_size": 32})):
        with pytest.raises(ValueError, match="RecognizerConfig"):
            make_config(**bad)
