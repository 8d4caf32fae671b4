"""The five seed architectures: exact parameter counts and layer sequences, labels, the knobs the search spaces
turn, and cnn_da's training-only augmentation."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from cifar_tune import choices
from cifar_tune.errors import UserError
from cifar_tune.models import architectures
from tests.helpers.synthetic import synthetic_cifar

SEED_PARAMS = {"mlp_bn": 1_710_346, "mlp_l2": 1_578_506, "cnn": 167_562, "cnn_da": 315_722, "resnet": 437_674}
LABELS = {"mlp_bn": "MLP with BatchNorm", "mlp_l2": "MLP with L2", "cnn": "Simple CNN",
          "cnn_da": "CNN with DA and Dropout", "resnet": "ResNet"}


def describe(layer) -> str:
    """A short, comparable name for a layer and the settings the seed fixes."""
    kind = type(layer).__name__
    if kind == "Conv2D":
        return f"Conv{layer.filters}-{layer.kernel_size[0]}x{layer.kernel_size[1]}-{layer.padding}-" \
               f"{layer.activation.__name__}"
    if kind == "Dense":
        return f"Dense{layer.units}-{layer.activation.__name__}"
    if kind == "Dropout":
        return f"Dropout{layer.rate:g}"
    if kind == "Activation":
        return layer.activation.__name__
    return {"MaxPooling2D": "Pool", "BatchNormalization": "BN"}.get(kind, kind)


CNN = ["Conv32-3x3-valid-relu", "Pool", "Conv64-3x3-valid-relu", "Pool", "Flatten"]
SEED_LAYERS = {
    "mlp_bn": ["Flatten", "Dense512-linear", "BN", "relu", "Dropout0.2", "Dense256-linear", "BN", "relu", "Dropout0.2",
               "Dense10-softmax"],
    "mlp_l2": ["Flatten", "Dense512-relu", "Dropout0.2", "Dense10-softmax"],
    "cnn": CNN + ["Dense64-relu", "Dense10-softmax"],
    "cnn_da": CNN + ["Dense128-relu", "Dropout0.5", "Dense10-softmax"],
    "resnet": ["Conv32-3x3-valid-relu", "BN", "Conv32-3x3-same-relu", "BN", "Pool",
               "Conv64-3x3-same-relu", "BN", "Conv64-3x3-same-relu", "BN", "Pool",
               "Conv128-3x3-same-relu", "BN", "Conv128-3x3-same-relu", "BN", "Pool",
               "Flatten", "Dense128-relu", "Dropout0.5", "Dense10-softmax"],
}


@pytest.mark.parametrize("key", SEED_PARAMS)
def test_baseline_reproduces_the_seed_model(key):
    arch = architectures.get(key)
    model = arch.build()
    assert model.count_params() == SEED_PARAMS[key] == arch.seed_params
    assert [describe(layer) for layer in model.layers] == SEED_LAYERS[key]
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 10)
    assert arch.label == LABELS[key]
    assert arch.baseline["learning_rate"] == 1e-3 and arch.baseline["batch_size"] == 32


def test_architectures_are_the_seed_notebooks_in_its_order():
    assert tuple(architectures.ARCHITECTURES) == choices.ARCH_KEYS == tuple(SEED_PARAMS)


def test_only_mlp_l2_has_weight_decay_in_the_seed():
    for key in SEED_PARAMS:
        regs = [layer.kernel_regularizer for layer in architectures.get(key).build().layers
                if getattr(layer, "kernel_regularizer", None) is not None]
        if key == "mlp_l2":
            assert len(regs) == 1 and float(regs[0].l2) == pytest.approx(1e-3)
        else:
            assert regs == []


def test_unknown_architecture_and_unknown_knob_are_user_errors():
    with pytest.raises(UserError, match="unknown architecture 'vgg'; choose from mlp_bn, mlp_l2, cnn"):
        architectures.get("vgg")
    with pytest.raises(UserError, match="cnn: unknown hyperparameter.*flip"):
        architectures.get("cnn").config({"flip": True})


def test_knobs_change_the_model():
    cnn = architectures.get("cnn").build({"width": 2.0, "dense_units": 128, "dropout": 0.3, "l2": 1e-4})
    assert [describe(layer) for layer in cnn.layers] == [
        "Conv64-3x3-valid-relu", "Pool", "Conv128-3x3-valid-relu", "Pool", "Flatten", "Dense128-relu",
        "Dropout0.3", "Dense10-softmax"]
    assert all(float(layer.kernel_regularizer.l2) == pytest.approx(1e-4)
               for layer in cnn.layers if type(layer).__name__ == "Conv2D")
    resnet = architectures.get("resnet").build({"width": 0.5, "dropout": 0.0})
    assert [layer.filters for layer in resnet.layers if type(layer).__name__ == "Conv2D"] == [16, 16, 32, 32, 64, 64]
    assert "Dropout" not in [type(layer).__name__ for layer in resnet.layers]
    mlp = architectures.get("mlp_bn").build({"units1": 128, "units2": 64, "dropout": 0.4})
    assert [layer.units for layer in mlp.layers if type(layer).__name__ == "Dense"] == [128, 64, 10]
    assert [layer.rate for layer in mlp.layers if type(layer).__name__ == "Dropout"] == [0.4, 0.4]
    assert architectures.get("mlp_l2").build({"units": 256, "l2": 0.0}).count_params() == 3072 * 256 + 256 + 2570


@pytest.mark.parametrize("key", ["cnn_da", "resnet"])
def test_augmentation_layers_when_switched_on(key):
    arch = architectures.get(key)
    assert arch.baseline["flip"] is False and arch.baseline["translate"] == 0.0  # the seed has none
    model = arch.build({"flip": True, "translate": 0.1})
    names = [type(layer).__name__ for layer in model.layers]
    assert names[:2] == ["RandomFlip", "RandomTranslation"] and names[2:] == [
        type(layer).__name__ for layer in arch.build().layers]
    assert model.layers[0].mode == "horizontal"
    assert model.layers[1].height_factor == 0.1 and model.layers[1].width_factor == 0.1
    assert model.count_params() == SEED_PARAMS[key]  # augmentation has no weights
    only_flip = [type(layer).__name__ for layer in arch.build({"flip": True}).layers]
    assert "RandomFlip" in only_flip and "RandomTranslation" not in only_flip


def test_augmentation_acts_in_training_only():
    keras.utils.set_random_seed(0)
    x = synthetic_cifar(n_train=16, n_test=10)[0].astype("float32") / 255.0  # stripes: not left-right symmetric
    knobs = {"dropout": 0.0}
    augmented = architectures.get("cnn_da").build({**knobs, "flip": True, "translate": 0.1})
    plain = architectures.get("cnn_da").build(knobs)
    plain.set_weights(augmented.get_weights())
    for layer in augmented.layers[:2]:
        np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
        assert not np.allclose(np.asarray(layer(x, training=True)), x)
    at_inference = np.asarray(augmented(x, training=False))
    np.testing.assert_allclose(at_inference, np.asarray(plain(x, training=False)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(augmented.predict(x, verbose=0), at_inference, rtol=1e-5, atol=1e-6)
    # in training mode the same weights see flipped/shifted images, so the outputs differ
    assert not np.allclose(np.asarray(augmented(x, training=True)), np.asarray(plain(x, training=True)),
                           atol=1e-4)


@pytest.mark.parametrize("key", list(SEED_PARAMS))
def test_bf16_computes_in_bfloat16_but_the_softmax_output_in_float32(key):
    import keras

    from cifar_tune import engines

    with engines.precision_policy("bf16"):
        model = architectures.get(key).build()
    assert model.layers[-1].compute_dtype == "float32"
    inner = [layer for layer in model.layers[:-1] if layer.weights]
    assert inner and all(layer.compute_dtype == "bfloat16" for layer in inner)
    assert all(w.dtype == "float32" for w in model.weights)  # float32 master weights
    assert model.count_params() == SEED_PARAMS[key]
    probs = model(np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32))
    assert keras.backend.standardize_dtype(probs.dtype) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.sum(probs, axis=-1)), 1.0, rtol=1e-5)
