"""bundle_digest: equal for the same computation, different for any change to it."""

import torch

from sa2_pipeline.models import create_model
from sa2_pipeline.models.bundle import bundle_digest, make_bundle


def _bundle(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    model = create_model("unet", base_channels=4)
    return make_bundle(model_name="unet", init_kwargs=model.init_kwargs,
                       state_dict=model.state_dict(), patch_size=32, **kwargs)


def test_digest_ignores_provenance_but_not_weights_or_settings():
    a = _bundle(metadata={"run_id": "r1", "best_epoch": 3})
    b = _bundle(metadata={"run_id": "r2"})
    assert bundle_digest(a) == bundle_digest(b)

    nudged = {k: v.clone() for k, v in a["state_dict"].items()}
    key = next(k for k, v in nudged.items() if v.is_floating_point())
    flat = nudged[key].view(-1)
    flat[0] = torch.nextafter(flat[0], torch.tensor(float("inf")))  # one ulp
    assert bundle_digest(dict(a, state_dict=nudged)) != bundle_digest(a)

    assert bundle_digest(_bundle(channel_order="bgr")) != bundle_digest(a)
    assert bundle_digest(_bundle(resize_to=224)) != bundle_digest(a)
    assert bundle_digest(_bundle(seed=1)) != bundle_digest(a)


def test_digest_of_ensembles_and_low_precision_weights():
    a, b = _bundle(0), _bundle(1)
    assert bundle_digest([a, b]) == bundle_digest([_bundle(0), _bundle(1)])
    assert bundle_digest([a, b]) != bundle_digest([b, a])
    assert bundle_digest([a]) == bundle_digest(a)

    half = {k: v.to(torch.bfloat16) if v.is_floating_point() else v
            for k, v in a["state_dict"].items()}
    assert bundle_digest(dict(a, state_dict=half)) != bundle_digest(a)
