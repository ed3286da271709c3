"""The model registry: build by name, list names, register, rebuild from init_kwargs."""

import os
import subprocess
import sys

import pytest
import torch

from sa2_pipeline import models
from sa2_pipeline.models import create_model, get_model_class, list_models, register_model


@pytest.fixture
def isolated_registry(monkeypatch):
    """Let a test register names without leaking them into other tests."""
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))


def test_builtin_models_are_listed_sorted():
    names = list_models()
    assert {"sa2net", "unet"} <= set(names)
    assert names == sorted(names)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown model 'foo'; valid names: .*sa2net.*unet"):
        create_model("foo")


def test_bad_constructor_argument_names_the_argument():
    with pytest.raises(ValueError, match=r"'sa2net'.*width.*accepted: in_channels"):
        create_model("sa2net", width=8)


@pytest.mark.parametrize("name", ["sa2net", "unet"])
def test_built_model_records_name_and_full_kwargs(name):
    model = create_model(name, base_channels=8, num_classes=2)
    assert model.model_name == name
    assert model.init_kwargs["base_channels"] == 8
    assert model.init_kwargs["num_classes"] == 2
    assert model.init_kwargs["in_channels"] == 3  # defaults are recorded too
    rebuilt = create_model(model.model_name, **model.init_kwargs)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in rebuilt.state_dict().items()}


def test_registered_builder_without_init_kwargs_gets_the_call_kwargs(isolated_registry):
    @register_model("tiny-test-net")
    class TinyNet(torch.nn.Module):
        def __init__(self, in_channels=3, num_classes=1):
            super().__init__()
            self.conv = torch.nn.Conv2d(in_channels, num_classes, 1)

        def forward(self, x):
            return self.conv(x)

    assert "tiny-test-net" in list_models()
    assert TinyNet.model_name == "tiny-test-net"
    model = create_model("tiny-test-net", num_classes=2)
    assert isinstance(model, TinyNet)
    assert model.init_kwargs == {"num_classes": 2}
    assert get_model_class("tiny-test-net") is TinyNet


def test_registering_a_taken_name_raises(isolated_registry):
    with pytest.raises(ValueError, match="'unet' is already registered"):

        @register_model("unet")
        class OtherUNet(torch.nn.Module):
            pass


def test_registering_the_same_builder_twice_is_a_no_op(isolated_registry):
    cls = get_model_class("sa2net")
    assert register_model("sa2net")(cls) is cls


def test_importing_the_registry_does_not_import_torch():
    code = "import sys, sa2_pipeline.models; print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip() == "False"
