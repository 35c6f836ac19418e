"""The model batcher gathers faces from many sessions into one crop call and one model run."""

import asyncio
import gc
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from rtserver.inference.batcher import ModelBatcher
from rtserver.kernels.crops import CpuFaceCropper
from rtserver.kernels.frame import crop_resize_normalize
from rtserver.metrics import Metrics
from rtserver.perception.exposure import FaceExposure


def strided_plane(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, (height, width + 24), dtype=np.uint8)[:, :width]


class BrokenModel:
    name = "broken"
    input_size = 64

    def run(self, batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("model failed")


async def test_faces_from_many_sessions_share_one_batch() -> None:
    rng = np.random.default_rng(3)
    planes = [strided_plane(rng, 240, 320), strided_plane(rng, 480, 640)]
    boxes = [(40, 30, 90, 90), (300, 200, 150, 160), (-20, -10, 80, 80), (250, 150, 100, 100)]
    metrics = Metrics()
    with ThreadPoolExecutor(2) as executor:
        batcher = ModelBatcher(
            [FaceExposure()], CpuFaceCropper(), executor, metrics, max_batch=8, max_wait_s=0.05
        )
        batcher.start()
        try:
            results = await asyncio.gather(
                *(batcher.infer(f"s{i}", planes[i % 2], None, box) for i, box in enumerate(boxes))
            )
        finally:
            await batcher.stop()
    assert metrics.model_batch.count == 1  # one batch for all four sessions' faces
    for i, (box, result) in enumerate(zip(boxes, results, strict=True)):
        assert result is not None
        crop = np.empty((1, 64, 64), np.float32)
        crop_resize_normalize(planes[i % 2], np.array([box], np.float32), crop)
        expected = FaceExposure().run(crop)[0]
        np.testing.assert_allclose(result["exposure"], expected, atol=1e-6)
        assert 0.0 <= result["exposure"][0] <= 1.0


async def test_exposure_of_known_faces() -> None:
    dark = np.full((100, 100), 30, np.uint8)
    bright = np.full((100, 100), 220, np.uint8)
    rows = FaceExposure().run(
        np.stack([(p[:64, :64] / 255.0 - 0.5) * 2 for p in (dark, bright)]).astype(np.float32)
    )
    assert rows[0][0] == pytest.approx(30 / 255, abs=1e-5)
    assert rows[1][0] == pytest.approx(220 / 255, abs=1e-5)
    assert rows[0][1] == pytest.approx(0.0, abs=1e-6)


async def test_overload_drops_the_oldest_crops_and_failures_reach_callers() -> None:
    plane = np.zeros((120, 160), np.uint8)
    metrics = Metrics()
    with ThreadPoolExecutor(1) as executor:
        batcher = ModelBatcher(
            [BrokenModel()], CpuFaceCropper(), executor, metrics, max_wait_s=0.01, max_pending=2
        )
        # Not started: nothing drains, so the third request pushes out the first.
        waiting = [
            asyncio.create_task(batcher.infer(name, plane, None, (0, 0, 50, 50)))
            for name in ("a", "b", "c")
        ]
        assert await asyncio.wait_for(waiting[0], timeout=1.0) is None
        assert not waiting[1].done()
        assert metrics.crops_dropped.value(reason="overload") == 1
        batcher.start()
        outcomes = await asyncio.gather(*waiting[1:], return_exceptions=True)
        await batcher.stop()
    assert all(isinstance(o, RuntimeError) for o in outcomes)


class RecordingModel:
    """Returns each crop's mean, and remembers the size of every batch it ran."""

    name = "mean"
    input_size = 16

    def __init__(self) -> None:
        self.batches: list[int] = []

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(len(batch))
        return batch.reshape(len(batch), -1).mean(axis=1, keepdims=True)


async def test_a_full_batch_runs_at_once_and_a_partial_one_after_the_delay() -> None:
    plane = np.arange(200 * 200, dtype=np.uint32).reshape(200, 200).astype(np.uint8)
    model = RecordingModel()
    with ThreadPoolExecutor(1) as executor:
        batcher = ModelBatcher(
            [model], CpuFaceCropper(0.0), executor, Metrics(), max_batch=4, max_wait_s=5.0
        )
        batcher.start()
        try:
            # Four requests fill a batch: it must run long before the 5 s delay.
            full = [batcher.infer("s", plane, None, (i * 10, 0, 40, 40)) for i in range(4)]
            results = await asyncio.wait_for(asyncio.gather(*full), timeout=1.0)
            batcher.max_wait_s = 0.05
            loop = asyncio.get_running_loop()
            started = loop.time()
            partial = await batcher.infer("s", plane, None, (0, 0, 40, 40))
            waited = loop.time() - started
        finally:
            await batcher.stop()
    assert model.batches == [4, 1]
    assert 0.04 <= waited < 1.0
    assert partial is not None
    # Results come back to each request in order: crop i's own mean.
    for i, result in enumerate(results):
        expected = np.empty((1, 16, 16), np.float32)
        crop_resize_normalize(plane, np.array([(i * 10, 0, 40, 40)], np.float32), expected, 0.0)
        assert result is not None
        assert result["mean"][0] == pytest.approx(float(expected.mean()), abs=1e-6)


async def test_stale_crops_are_dropped_not_run() -> None:
    plane = np.zeros((100, 100), np.uint8)
    model = RecordingModel()
    metrics = Metrics()
    with ThreadPoolExecutor(1) as executor:
        batcher = ModelBatcher(
            [model], CpuFaceCropper(), executor, metrics, max_wait_s=0.001, max_age_s=0.05
        )
        old = asyncio.create_task(batcher.infer("s", plane, None, (0, 0, 50, 50)))
        await asyncio.sleep(0.1)  # waits in the queue past max_age_s before the batcher runs
        batcher.start()
        try:
            assert await old is None
            fresh = await batcher.infer("s", plane, None, (0, 0, 50, 50))
        finally:
            await batcher.stop()
    assert fresh is not None
    assert metrics.crops_dropped.value(reason="stale") == 1
    assert model.batches == [1]


def test_models_must_share_an_input_size() -> None:
    with ThreadPoolExecutor(1) as executor, pytest.raises(ValueError):
        ModelBatcher([FaceExposure(64), FaceExposure(48)], CpuFaceCropper(), executor, Metrics())


async def test_an_idle_batcher_holds_no_frame() -> None:
    """Once its faces are answered, no request (nor the frame plane it points to) stays
    alive while the batcher waits for the next: an idle server keeps no session's frames."""
    rng = np.random.default_rng(5)
    plane = strided_plane(rng, 480, 640)
    frame = weakref.ref(plane.base if plane.base is not None else plane)
    with ThreadPoolExecutor(1) as executor:
        batcher = ModelBatcher([FaceExposure()], CpuFaceCropper(), executor, Metrics())
        batcher.start()
        try:
            result = await batcher.infer("s", plane, None, (40, 30, 90, 90))
            assert result is not None
            del plane, result
            await asyncio.sleep(0.05)  # the batcher is waiting for its next batch
            gc.collect()
            assert frame() is None
        finally:
            await batcher.stop()
