"""ComfyUI's history entries: every file of every kind an output node lists, and its texts."""

from __future__ import annotations

from formy_async.comfy.messages import HistoryEntry


def entry(outputs: dict[str, dict[str, object]]) -> HistoryEntry:
    return HistoryEntry.model_validate({"outputs": outputs, "status": {"status_str": "success"}})


def test_images_animations_videos_and_audio_are_all_files() -> None:
    found = entry(
        {
            "9": {"images": [{"filename": "a_00001_.png", "subfolder": "formy", "type": "output"}]},
            "5": {"images": [{"filename": "v_00001_.mp4", "type": "output"}], "animated": [True]},
            "7": {"audio": [{"filename": "s_00001_.flac", "type": "output"}]},
        }
    ).files()
    assert [(f.node_id, f.media, f.filename, f.animated) for f in found] == [
        ("9", "images", "a_00001_.png", False),
        ("5", "images", "v_00001_.mp4", True),
        ("7", "audio", "s_00001_.flac", False),
    ]
    assert found[0].subfolder == "formy"


def test_only_the_named_output_nodes_count_in_their_order() -> None:
    history = entry(
        {
            "1": {"images": [{"filename": "one.png"}]},
            "2": {"images": [{"filename": "two.png"}]},
        }
    )
    assert [f.filename for f in history.files(["2", "1"])] == ["two.png", "one.png"]
    assert [f.filename for f in history.files(["2"])] == ["two.png"]


def test_video_helper_suite_gifs_are_fetched_by_name_never_by_fullpath() -> None:
    (ref,) = entry(
        {
            "3": {
                "gifs": [
                    {
                        "filename": "AnimateDiff_00001.mp4",
                        "subfolder": "",
                        "type": "output",
                        "format": "video/h264-mp4",
                        "fullpath": "/home/comfy/output/AnimateDiff_00001.mp4",
                    }
                ]
            }
        }
    ).files()
    assert (ref.media, ref.format) == ("gifs", "video/h264-mp4")
    assert "fullpath" not in ref.model_dump()


def test_asset_fields_are_accepted_and_not_needed() -> None:
    (ref,) = entry(
        {
            "9": {
                "images": [
                    {
                        "filename": "a.png",
                        "type": "output",
                        "id": "5a0c…",
                        "preview_id": None,
                        "asset": {"id": "x", "asset_hash": "blake3:00", "size": 3},
                    }
                ]
            }
        }
    ).files()
    assert (ref.filename, ref.type) == ("a.png", "output")


def test_3d_files_listed_as_plain_names_are_files_and_latents_are_not() -> None:
    found = entry({"4": {"3d": ["mesh_00001_.glb"], "latents": [{"filename": "x.latent"}]}}).files()
    assert [(f.media, f.filename) for f in found] == [("3d", "mesh_00001_.glb")]


def test_text_outputs_are_read_as_text() -> None:
    history = entry({"8": {"text": ["a caption", ("from a tuple",)]}, "9": {"images": []}})
    assert history.texts() == [("8", "a caption"), ("8", "from a tuple")]
