"""Parameter names across Cubism 2/3, kokoro.json overrides, settings files of both generations."""
from __future__ import annotations

import json

import pytest

from avatar.params import STANDARD, ModelOverrides, ParamMap, load_overrides, logical_name, v2_to_v3, v3_to_v2
from avatar.settings import AvatarError, check_files, read_settings, settings_version
from tests.unit.avatar_fixtures import make_v2, make_v3


@pytest.mark.parametrize("v2,v3", [
    ("PARAM_MOUTH_OPEN_Y", "ParamMouthOpenY"), ("PARAM_EYE_L_OPEN", "ParamEyeLOpen"),
    ("PARAM_ANGLE_X", "ParamAngleX"), ("PARAM_BROW_L_Y", "ParamBrowLY"), ("PARAM_BROW_R_Y", "ParamBrowRY"),
    ("PARAM_BODY_ANGLE_X", "ParamBodyAngleX"), ("PARAM_TERE", "ParamCheek"),
    ("PARAM_EYE_BALL_X", "ParamEyeBallX"),
])
def test_standard_names_convert_both_ways(v2, v3):
    assert v2_to_v3(v2) == v3
    assert v3_to_v2(v3) == v2


def test_nonstandard_names_convert_word_by_word_and_others_pass_through():
    assert v2_to_v3("PARAM_ARM_L_A") == "ParamArmLA"
    assert v3_to_v2("ParamArmLA") == "PARAM_ARM_L_A"
    assert v2_to_v3("ParamAlready") == "ParamAlready"
    assert v3_to_v2("custom_thing") == "custom_thing"


def test_every_logical_name_maps_per_generation():
    for logical, (v2, v3) in STANDARD.items():
        assert ParamMap(2).name(logical) == v2
        assert ParamMap(3).name(logical) == v3
        assert logical_name(v2) == logical and logical_name(v3) == logical


def test_available_ids_decide_and_missing_ones_give_none():
    m = ParamMap(3, available=["ParamAngleX", "PARAM_MOUTH_OPEN_Y"])  # a v3 model with a v2-style name
    assert m.name("angle_x") == "ParamAngleX"
    assert m.name("mouth_open") == "PARAM_MOUTH_OPEN_Y"
    assert m.name("eye_l_open") is None
    assert m.resolve({"angle_x": 10, "eye_l_open": 0.5, "PARAM_ANGLE_X": 3}) == {"ParamAngleX": 3.0}


def test_lipsync_group_names_the_mouth_of_a_cubism3_model():
    assert ParamMap(3, available=["ParamA", "ParamAngleX"], lipsync_ids=["ParamA"]).name("mouth_open") == "ParamA"
    # the standard id wins when the model has it
    assert ParamMap(3, available=["ParamMouthOpenY"], lipsync_ids=["ParamA"]).name("mouth_open") == "ParamMouthOpenY"


def test_override_file_beside_the_settings(tmp_path):
    settings = make_v2(tmp_path)
    (tmp_path / "kokoro.json").write_text(json.dumps({
        "params": {"mouth_open": "PARAM_MOUTH_A"}, "mouth_max": 2,
        "expressions": {"happy": "f01"}, "motions": {"happy": ["tap_body", 1]},
        "hit_areas": {"face": "D_REF.FACE"}}))
    o = load_overrides(settings)
    assert o.mouth_max == 2.0 and o.expressions == {"happy": "f01"}
    assert o.motions == {"happy": ("tap_body", 1)} and o.hit_areas == {"face": "D_REF.FACE"}
    m = ParamMap(2, available=["PARAM_MOUTH_OPEN_Y", "PARAM_MOUTH_A"], overrides=o)
    assert m.name("mouth_open") == "PARAM_MOUTH_A"
    assert m.name("angle_x") is None  # not in available
    assert load_overrides(make_v2(tmp_path / "other")) == ModelOverrides()  # no file: no overrides


@pytest.mark.parametrize("content,needle", [
    ("{not json", "not valid JSON"),
    ('{"mouth_max": -1}', "mouth_max"),
    ('{"mouth_max": true}', "mouth_max"),
    ('{"motions": {"happy": ["idle"]}}', "motions['happy']"),
    ('{"params": {"mouth_open": 3}}', "'params'"),
    ('{"colour": 1}', "unknown key"),
])
def test_bad_override_file_names_the_problem(tmp_path, content, needle):
    settings = make_v2(tmp_path)
    (tmp_path / "kokoro.json").write_text(content)
    with pytest.raises(AvatarError, match="kokoro.json") as e:
        load_overrides(settings)
    assert needle in str(e.value)


def test_settings_dispatch_by_suffix(tmp_path):
    assert settings_version("a/x.model3.json") == 3
    assert settings_version("x.MODEL.json") == 2 and settings_version("model.json") == 2
    assert settings_version("x.json") is None
    s2 = read_settings(make_v2(tmp_path / "v2"))
    assert (s2.cubism, s2.name, list(s2.expressions)) == (2, "tiny", ["f00", "f01"])
    assert s2.hit_areas == [("head", "D_REF.HEAD")]
    s3 = read_settings(make_v3(tmp_path / "v3"))
    assert (s3.cubism, s3.name, list(s3.expressions)) == (3, "tiny3", ["smile"])
    assert s3.hit_areas == [("Head", "HitAreaHead")]
    assert s3.lipsync_ids == ["ParamMouthOpenY"] and s3.motions == {"Idle": ["idle.motion3.json"]}
    check_files(s2)
    check_files(s3)
    with pytest.raises(AvatarError, match="not a Live2D settings file"):
        read_settings(tmp_path / "x.json")


def test_settings_file_problems_are_named(tmp_path):
    with pytest.raises(AvatarError, match="not found"):
        read_settings(tmp_path / "none.model.json")
    bad = tmp_path / "bad.model.json"
    bad.write_text("{oops")
    with pytest.raises(AvatarError, match="not valid JSON"):
        read_settings(bad)
    bad.write_text('{"model": "x.moc"}')
    with pytest.raises(AvatarError, match="textures"):
        read_settings(bad)
    bad3 = tmp_path / "bad.model3.json"
    bad3.write_text('{"Version": 3}')
    with pytest.raises(AvatarError, match="FileReferences"):
        read_settings(bad3)


@pytest.mark.parametrize("damage,needle", [
    (lambda d: (d / "moc" / "tiny.moc").unlink(), "referenced file missing: moc/tiny.moc"),
    (lambda d: (d / "moc" / "texture_00.png").unlink(), "texture_00.png"),
    (lambda d: (d / "moc" / "tiny.moc").write_bytes(b"garbage"), "not a Cubism 2 .moc"),
    (lambda d: (d / "moc" / "texture_00.png").write_bytes(b"GIF89a"), "not a PNG"),
    (lambda d: (d / "exp" / "f00.exp.json").write_text("{"), "expression file is not valid JSON"),
])
def test_broken_cubism2_files_are_caught_before_the_runtime(tmp_path, damage, needle):
    path = make_v2(tmp_path)
    damage(tmp_path)
    with pytest.raises(AvatarError) as e:
        check_files(read_settings(path))
    assert needle in str(e.value)


def test_broken_moc3_and_escaping_paths_are_caught(tmp_path):
    path = make_v3(tmp_path, moc=b"garbage-not-a-moc3")
    with pytest.raises(AvatarError, match="not a Cubism 3"):
        check_files(read_settings(path))
    path = make_v3(tmp_path / "b")
    (tmp_path / "b" / "idle.motion3.json").write_text("[1,")
    with pytest.raises(AvatarError, match="motion file is not valid JSON"):
        check_files(read_settings(path))
    data = json.loads(path.read_text())
    data["FileReferences"]["Textures"] = ["../../etc/passwd"]
    path.write_text(json.dumps(data))
    with pytest.raises(AvatarError, match="outside the model folder"):
        check_files(read_settings(path))
