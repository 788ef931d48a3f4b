"""predict: a trained or exported model on images, folders and videos, as the evaluation sees
them; drawn images, COCO JSON and the cls / emb arrays; bad input named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torchvision.io import decode_image, write_png

from tests.cli_runs import TINY
from tests.test_export import ALL_TASKS_WITH_SITES
from yolor_lightning.checkpoints import load_checkpoint, module_from_checkpoint
from yolor_lightning.config import compose_config
from yolor_lightning.export import export
from yolor_lightning.predict.models import load_predictor
from yolor_lightning.predict.pipeline import predict
from yolor_lightning.predict.sources import SourceError, read_frames
from yolor_lightning.train import build_datamodule, build_module, train

TINY_RUN = [
    "+experiment=yolor_csp",  # fa add + pr mul: the folded network must predict the same
    *(override for override in TINY if not override.startswith("data.shapes.image_size")),
    "data.shapes.image_size=80",  # letterboxed to 64: the boxes must come back to 80x80
    "trainer.max_epochs=1",
    "logger=csv",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny trained YOLOR-CSP checkpoint and the folder of its validation images."""
    output_dir = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YOLOR_LIGHTNING_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        cfg = compose_config([*TINY_RUN, f"output_dir={output_dir}"])
        results = train(cfg)
        image_dir, _ = build_datamodule(cfg).split_files("val")
    return Path(results["best_checkpoint"]), image_dir


def evaluation_detections(checkpoint: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The detections the evaluation scores, by file name: validation batches through
    ``UnifiedModule.detections_and_ground_truth`` (NMS, then back to original pixels)."""
    saved = load_checkpoint(checkpoint)
    module = module_from_checkpoint(saved).eval()
    datamodule = build_datamodule(compose_config(TINY_RUN))
    found = {}
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            detections, _ = module.detections_and_ground_truth(
                module(batch["images"])["det"], batch["meta"]
            )
            for meta, detection in zip(batch["meta"], detections, strict=True):
                found[meta["file_name"]] = detection
    return found


def by_file(written: dict) -> dict[str, dict[str, torch.Tensor]]:
    document = json.loads(written["coco"].read_text())
    files = {image["id"]: image["file_name"] for image in document["images"]}
    found = {name: {"boxes": [], "scores": [], "labels": []} for name in files.values()}
    for annotation in document["annotations"]:
        x, y, w, h = annotation["bbox"]
        entry = found[files[annotation["image_id"]]]
        entry["boxes"].append([x, y, x + w, y + h])
        entry["scores"].append(annotation["score"])
        entry["labels"].append(annotation["category_id"] - 1)  # shapes ids are labels + 1
    return {
        name: {
            "boxes": torch.tensor(entry["boxes"]).reshape(-1, 4),
            "scores": torch.tensor(entry["scores"]),
            "labels": torch.tensor(entry["labels"], dtype=torch.int64),
        }
        for name, entry in found.items()
    }


def assert_same_detections(actual: dict, expected: dict, tolerance: float) -> None:
    assert sorted(actual) == sorted(expected)
    for name in expected:
        assert len(actual[name]["scores"]) == len(expected[name]["scores"]), name
        torch.testing.assert_close(actual[name]["labels"], expected[name]["labels"].cpu(), msg=name)
        for key in ("boxes", "scores"):
            torch.testing.assert_close(
                actual[name][key].float(),
                expected[name][key].float().cpu(),
                rtol=tolerance,
                atol=tolerance,
                msg=name,
            )


@pytest.mark.slow
def test_checkpoint_predictions_equal_the_evaluations_detections(trained, tmp_path):
    checkpoint, images = trained
    written = predict(checkpoint, images, tmp_path, conf=None)  # the evaluation's threshold
    expected = evaluation_detections(checkpoint)
    assert written["images"] == len(expected) == 16
    assert written["detections"] > 0
    assert_same_detections(by_file(written), expected, tolerance=1e-4)
    drawn = sorted(p.name for p in tmp_path.glob("*.jpg"))
    assert drawn == sorted(f"{Path(name).stem}.jpg" for name in expected)
    first = decode_image(str(tmp_path / drawn[0]))
    assert first.shape[-2:] == (80, 80)  # the original image, not the letterboxed input


@pytest.mark.slow
def test_onnx_folded_and_checkpoint_predictions_agree(trained, tmp_path):
    checkpoint, images = trained
    exported = export(checkpoint, tmp_path / "export")
    written = {
        kind: by_file(predict(path, images, tmp_path / kind, conf=None, draw=False))
        for kind, path in (
            ("ckpt", checkpoint),
            ("pt", exported["checkpoint"]),
            ("onnx", exported["onnx"]),
        )
    }
    assert sum(len(found["scores"]) for found in written["ckpt"].values()) > 0
    assert_same_detections(written["pt"], written["ckpt"], tolerance=1e-5)
    assert_same_detections(written["onnx"], written["ckpt"], tolerance=1e-4)
    assert load_predictor(exported["onnx"]).categories[0]["name"] == "circle"


def test_cls_and_emb_heads_write_class_probabilities_and_object_embeddings(tmp_path):
    module = build_module(compose_config(ALL_TASKS_WITH_SITES))
    checkpoint = tmp_path / "untrained.ckpt"
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "datamodule_hyper_parameters": {"image_size": 64, "name": "shapes"},
        },
        checkpoint,
    )
    images = tmp_path / "images"
    images.mkdir()
    for index, (height, width) in enumerate([(48, 80), (64, 64)]):
        pixels = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
        write_png(pixels, str(images / f"{index}.png"))
    written = predict(checkpoint, images, tmp_path / "out", conf=None, draw=False)
    arrays = np.load(written["arrays"])
    assert arrays["class_probabilities"].shape == (2, 8)
    assert list(arrays["image_ids"]) == [1, 2]
    assert written["detections"] > 0
    assert arrays["embeddings"].shape == (written["detections"], 16)
    assert list(arrays["annotation_ids"]) == list(range(1, written["detections"] + 1))
    np.testing.assert_allclose(np.linalg.norm(arrays["embeddings"], axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_a_video_is_predicted_frame_by_frame(trained, tmp_path):
    checkpoint, images = trained
    video = tmp_path / "clip.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 80, 80, "yuv420p"
        for path in sorted(images.iterdir())[:3]:
            frame = decode_image(str(path)).permute(1, 2, 0).numpy()
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    written = predict(checkpoint, video, tmp_path / "out")
    document = json.loads(written["coco"].read_text())
    assert [image["file_name"] for image in document["images"]] == [
        "clip.mp4#0",
        "clip.mp4#1",
        "clip.mp4#2",
    ]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.jpg")) == [
        "clip_000000.jpg",
        "clip_000001.jpg",
        "clip_000002.jpg",
    ]


def test_bad_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ckpt=.*missing\.ckpt"):
        predict(tmp_path / "missing.ckpt", tmp_path, tmp_path / "out")
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match=r"weights\.bin: unknown extension '\.bin'"):
        load_predictor(weights)
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    for source, message in (
        (tmp_path / "absent.jpg", r"absent\.jpg: no such file or folder"),
        (notes, r"notes\.txt: unknown extension '\.txt'"),
        (broken, r"broken\.png: cannot decode this image"),
        (tmp_path / "empty", r"empty: no images"),
    ):
        (tmp_path / "empty").mkdir(exist_ok=True)
        with pytest.raises(SourceError, match=message):
            list(read_frames(source))


def test_command_line_names_a_missing_checkpoint_and_has_help(tmp_path):
    command = [sys.executable, "-m", "yolor_lightning.predict"]
    shown = subprocess.run([*command, "--help"], capture_output=True, text=True, check=True)
    assert "ckpt" in shown.stdout and "source" in shown.stdout
    failed = subprocess.run(
        [*command, f"ckpt={tmp_path / 'missing.ckpt'}", f"source={tmp_path}", f"out={tmp_path}"],
        capture_output=True,
        text=True,
    )
    assert failed.returncode != 0
    assert "missing.ckpt: no such checkpoint file" in failed.stderr
