"""Teachers: tiny random DINOv2 / DINOv2-with-registers / V-JEPA 2 saved and loaded by path."""
import numpy as np
import pytest
import torch
from transformers import (
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    VJEPA2Config,
    VJEPA2Model,
)

from cross4d_core.teachers import Dinov2Teacher, TeacherWeightsNotFound, VJEPA2Teacher, load_teacher
from cross4d_core.teachers.base import IMAGENET_MEAN, IMAGENET_STD

TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=14,
            image_size=126)


@pytest.fixture(scope="module")
def teacher_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(**TINY)).save_pretrained(root / "dinov2")
    Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**TINY, num_register_tokens=4)).save_pretrained(root / "reg")
    VJEPA2Model(VJEPA2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2, crop_size=32,
                             patch_size=16, frames_per_clip=8, pred_hidden_size=32, pred_num_hidden_layers=1,
                             pred_num_attention_heads=2, pred_mlp_ratio=2)).save_pretrained(root / "vjepa2")
    return root


def _images(T, H=126, W=126, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (T, H, W, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", ["dinov2", "reg"])
def test_dinov2_grid_is_patch_tokens_without_cls_and_registers(teacher_dirs, name):
    teacher = load_teacher("dinov2", str(teacher_dirs / name))
    assert isinstance(teacher, Dinov2Teacher) and not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())
    images = _images(3)
    feats, transform = teacher.grid_features(images)
    assert feats.shape == (3, 9, 9, 32) and transform.grid_size == (9, 9) == teacher.grid_size(126, 126)
    pixels = (torch.tensor(images).permute(0, 3, 1, 2).float() / 255 - torch.tensor(IMAGENET_MEAN)[:, None, None]) \
        / torch.tensor(IMAGENET_STD)[:, None, None]
    with torch.no_grad():
        hidden = teacher.model(pixel_values=pixels).last_hidden_state
    skip = 1 + (4 if name == "reg" else 0)
    assert hidden.shape[1] == skip + 81
    torch.testing.assert_close(feats, hidden[:, skip:].reshape(3, 9, 9, 32))
    # frames are independent: batching does not change a frame's features
    torch.testing.assert_close(teacher.grid_features(images[1:2])[0][0], feats[1], atol=1e-5, rtol=1e-5)


def test_dinov2_camera_preprocessing_resize_and_crop(teacher_dirs):
    teacher = load_teacher("dinov2", str(teacher_dirs / "dinov2"), resize_shortest_edge=56, crop=42)
    images = _images(2, 48, 64)
    pixels, transform = teacher.preprocess(images)
    assert pixels.shape == (2, 3, 42, 42) and transform.grid_size == (3, 3)
    expected = transform.apply(torch.tensor(images).permute(0, 3, 1, 2).float() / 255)
    unnormalised = pixels * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    torch.testing.assert_close(unnormalised, expected, atol=1e-5, rtol=1e-5)
    feats, _ = teacher.grid_features(images)
    with torch.no_grad():
        hidden = teacher.model(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(feats, hidden[:, 1:].reshape(2, 3, 3, 32))  # the cropped image's patch tokens
    patch, inside = teacher.pixel_to_grid(torch.tensor([[31.5, 23.5], [0.0, 0.0]]), 48, 64)
    assert patch.tolist() == [4, -1] and inside.tolist() == [True, False]


def test_vjepa2_slots_and_grid(teacher_dirs):
    teacher = load_teacher("vjepa2", str(teacher_dirs / "vjepa2"))
    assert isinstance(teacher, VJEPA2Teacher) and teacher.tubelet == 2
    assert [teacher.slot_of_frame(t) for t in range(5)] == [0, 0, 1, 1, 2] and teacher.num_slots(5) == 3
    images = _images(5, 40, 60)
    feats, transform = teacher.grid_features(images)
    assert feats.shape == (3, 2, 2, 32) and transform.grid_size == (2, 2)
    assert (transform.crop_h, transform.crop_w) == (32, 32)
    pixels, _ = teacher.preprocess(images)
    video = torch.cat([pixels, pixels[-1:]])[None]  # odd T: the last frame is repeated
    with torch.no_grad():
        hidden = teacher.model(pixel_values_videos=video, skip_predictor=True).last_hidden_state
    torch.testing.assert_close(feats, hidden.reshape(3, 2, 2, 32))
    # the first slot only sees frames 0 and 1 through its tubelet embedding: changing frame 4 moves
    # slot 2's features more than slot 0's (attention mixes the rest)
    other = images.copy()
    other[4] = 255 - other[4]
    moved = (teacher.grid_features(other)[0] - feats).abs().mean(dim=(1, 2, 3))
    assert moved[2] > moved[0]


def test_missing_weights_offline_give_download_hint(tmp_path):
    with pytest.raises(TeacherWeightsNotFound, match="huggingface-cli download facebook/dinov2-large"):
        load_teacher("dinov2", "facebook/dinov2-large")
    with pytest.raises(TeacherWeightsNotFound, match="huggingface-cli download"):
        load_teacher("vjepa2", str(tmp_path / "nothing-here"))


def test_wrong_kind_and_bad_images(teacher_dirs):
    with pytest.raises(ValueError, match="is a 'vjepa2' model, expected one of"):
        load_teacher("dinov2", str(teacher_dirs / "vjepa2"))
    with pytest.raises(ValueError, match="not one of"):
        load_teacher("clip", str(teacher_dirs / "dinov2"))
    teacher = load_teacher("dinov2", str(teacher_dirs / "dinov2"))
    with pytest.raises(ValueError, match="uint8"):
        teacher.grid_features(np.zeros((2, 28, 28, 3), np.float32))
    with pytest.raises(ValueError, match="empty images"):
        teacher.grid_features(np.zeros((2, 0, 28, 3), np.uint8))
