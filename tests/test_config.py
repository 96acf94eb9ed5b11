import pytest

from videodirector.config import EditConfig, apply_overrides, load_config
from videodirector.errors import ConfigError

from conftest import SHARED

BEAR = SHARED / "data" / "bear" / "bear_editing_config.yaml"


@pytest.mark.skipif(not BEAR.is_file(), reason="../shared is absent")
def test_official_bear_yaml_loads_and_resolves():
    cfg = load_config(BEAR, {"input.video": str(BEAR.parent / "bear.mp4"), "input.masks": str(BEAR.parent / "masks")})
    assert cfg.prompts.source == "A brown bear, walking on rocky terrain, next to a stone wall."
    assert cfg.prompts.target.startswith("A tiger,")
    assert cfg.prompts.equalizer_words == ["tiger"] and cfg.prompts.equalizer_values == [1.0]
    assert cfg.stdg.coefficients == [0.5, 0.5, 0.0, 0.5]
    assert cfg.stdg.temporal_block_weights == {"up_blocks.1": 20000.0, "up_blocks.2": 10000.0}
    assert cfg.inversion.null_text == "multi_frame" and cfg.inversion.null_inner_steps == 10
    assert cfg.inversion.guidance_scale == 7.5 and cfg.inversion.num_steps == 50
    assert cfg.control.self_replace_steps == 0.4 and cfg.control.cross_replace_steps == 0.8
    assert cfg.control.mutual_layers == [7, 16] and cfg.control.mutual_end_step == 50
    assert cfg.control.cross_mode == "refine" and cfg.input.ellipse_mask is True
    assert cfg.model.single_file.endswith("realisticVisionV60B1_v51VAE.safetensors")
    assert cfg.model.motion_adapter.endswith("v3_sd15_mm.ckpt")
    # without overrides, a relative path that exists in neither the working directory nor the YAML's
    # folder stays as written (the error then names it as the official script would see it)
    raw = load_config(BEAR)
    assert raw.input.video == "resources/bear.mp4"


def test_unknown_key_and_wrong_type_name_the_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("inversion:\n  num_step: 10\n")
    with pytest.raises(ConfigError, match="unknown config key 'inversion.num_step'"):
        load_config(p)
    p.write_text("inversion:\n  num_steps: ten\n")
    with pytest.raises(ConfigError, match="'inversion.num_steps' must be an integer"):
        load_config(p)
    p.write_text("STDG_guide: [0.5, 0.5, 0, 0.5]\ninversion_prompt: a\nnew_prompt: b\nbogus_key: 1\n")
    with pytest.raises(ConfigError, match="unknown key 'bogus_key'"):
        load_config(p)


def test_overrides_and_validation():
    cfg = apply_overrides(EditConfig(), {"inversion.num_steps": 10, "seed": 3})
    assert cfg.inversion.num_steps == 10 and cfg.seed == 3
    with pytest.raises(ConfigError, match="multiples of 8"):
        load_config_from({"input": {"height": 500}})
    with pytest.raises(ConfigError, match="1 to 1024 frames"):
        load_config_from({"input": {"num_frames": 2000}})
    from videodirector.methods import catalog  # noqa: F401  (registers every method)
    from videodirector.methods.base import check_frames

    check_frames(64, "i2vedit")  # in clips
    for method in ("videodirector", "video-p2p", "assd"):  # the method run decides, not the sections a YAML holds
        with pytest.raises(ConfigError, match="1 to 32 frames"):
            check_frames(64, method)


def load_config_from(data, tmp=None):
    import tempfile

    import yaml

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(data, f)
    return load_config(f.name)
