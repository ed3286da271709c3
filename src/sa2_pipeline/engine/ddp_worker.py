"""Entry point of one ``torchrun`` worker: ``python -m sa2_pipeline.engine.ddp_worker SPEC RESULT``.

``SPEC`` is the ``torch.save``'d :class:`~sa2_pipeline.engine.spec.FitSpec` written by
:func:`sa2_pipeline.engine.distributed.launch`. Every worker calls
:func:`~sa2_pipeline.engine.fit.fit` with it; seeing ``WORLD_SIZE > 1`` it joins the
process group and trains its share of every epoch under ``DistributedDataParallel``. The
first worker of each node writes ``(bundle, history)`` to ``RESULT`` atomically for the
launcher to return.
"""

from __future__ import annotations

import logging
import sys

from sa2_pipeline.engine.distributed import worker_info
from sa2_pipeline.engine.fit import fit


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m sa2_pipeline.engine.ddp_worker SPEC RESULT", file=sys.stderr)
        return 2
    spec_path, result_path = args

    import torch

    from sa2_pipeline.engine.checkpoint import save_atomic

    info = worker_info()
    logging.basicConfig(
        level=logging.INFO if info.rank == 0 else logging.WARNING,
        format=f"[rank {info.rank}] %(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The one full unpickle in the project: the launcher's own call arguments (callbacks
    # included), written a moment ago into a folder only this user can read (mkdtemp,
    # 0700). Model files never come this way: they load weights-only.
    spec = torch.load(spec_path, map_location="cpu", weights_only=False)
    bundle, history = fit(spec)
    if info.local_rank == 0:
        save_atomic({"bundle": bundle, "history": history}, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
