"""What the report says about each table's judge: the model, the protocol, the unscored count, the warning when the
judge is the stage-3 reward model (checked end to end against a real server on loopback), and the published rows
beside ours only when protocol and judge model match."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from judge_fixtures import BRIGHTEN, endpoint_critic_dir
from openai_server import recording_proxy

from lego_edit.bricks.registry import default_registry
from lego_edit.config_checks import ConfigError, check_config
from lego_edit.evaluation import runner
from lego_edit.evaluation.benchmarks import GEDIT_TASK_TYPES, IMGEDIT_TYPES, write_gedit_fixture, write_imgedit_fixture
from lego_edit.evaluation.judge_report import REWARD_MODEL_WARNING
from lego_edit.evaluation.judging import EvaluationJudgeConfig, load_evaluation_judge
from lego_edit.evaluation.protocols import NOT_PUBLISHED
from lego_edit.evaluation.published import same_judge_model
from lego_edit.evaluation.tables import write_tables


def section(markdown: str, heading: str) -> str:
    """The text of one '# heading' section of tables.md."""
    return ("\n" + markdown).split(f"\n# {heading}\n", 1)[1].split("\n# ", 1)[0]


@pytest.fixture(scope="module")
def benchmark_items(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    gedit = runner.load_items("gedit", {"path": str(write_gedit_fixture(root / "gedit")), "languages": ["en"]})
    json_path, images = write_imgedit_fixture(root / "imgedit")
    imgedit = runner.load_items("imgedit", {"json": str(json_path), "images": str(images)})
    for item in gedit + imgedit:
        item.workflow = BRIGHTEN  # one runnable workflow stands in for a Builder (the "oracle" row runs it)
    return {"gedit": gedit, "imgedit": imgedit, "cache": root / "judge_cache.sqlite"}


# ---------------------------------------------------------------- end to end against a loopback server
@pytest.mark.parametrize("case", ["judge is the critic's endpoint", "judge left empty", "judge is another model"])
def test_the_report_warns_exactly_when_the_judge_is_the_reward_model(served_judge, benchmark_items, tmp_path, case):
    with recording_proxy(served_judge.base_url) as proxy:
        if case == "judge is another model":
            critic_dir = endpoint_critic_dir(tmp_path / "critic", "http://127.0.0.1:9/v1", "reward-critic")
        else:  # the trailing slash still names the same endpoint
            critic_dir = endpoint_critic_dir(tmp_path / "critic", proxy.base_url + "/", served_judge.model)
        endpoint = {} if case == "judge left empty" else {"base_url": proxy.base_url, "model": served_judge.model}
        cfg = EvaluationJudgeConfig(**endpoint, max_tokens=48, max_retries=0, cache=str(benchmark_items["cache"]))
        frames = []
        for set_name in ("gedit", "imgedit"):
            judge = load_evaluation_judge(cfg, critic_dir, set_name)
            table = runner.run_chunk(
                benchmark_items[set_name],
                {"name": "oracle", "kind": "oracle"},
                tmp_path,
                tmp_path / set_name,
                tmp_path / f"{set_name}.parquet",
                registry=default_registry(plugins=False),
                judge=judge,
            )
            frames.append(table.to_pandas())
            judge.close()
    df = pd.concat(frames, ignore_index=True)
    assert df["executed"].all() and df["judge_is_reward_model"].eq(case != "judge is another model").all()
    write_tables(df, tmp_path / "eval")
    markdown = (tmp_path / "eval" / "tables.md").read_text()
    for name, n in (("gedit", 11), ("imgedit", 9)):
        text = section(markdown, name)
        assert f"Judge of {name}: {served_judge.model} at " in text and f"protocol: {NOT_PUBLISHED}." in text
        unscored = int(text.split("Unscored by the judge: ", 1)[1].split(" of ")[0])
        assert f"Unscored by the judge: {unscored} of {n} edited items" in text
        assert "NOT comparable" in text and "not judged under the published protocol" in text
        assert (REWARD_MODEL_WARNING in text) == (case != "judge is another model")
    if case == "judge is another model":
        assert REWARD_MODEL_WARNING not in markdown
    judges = pd.read_csv(tmp_path / "eval" / "judges.csv").set_index("set")
    assert judges["judge_is_reward_model"].eq(case != "judge is another model").all()
    assert list(judges["edited"]) == [11, 9] and judges["protocol"].eq(NOT_PUBLISHED).all()


# ---------------------------------------------------------------- tables from recorded rows
def gedit_rows(judge_model: str, published: bool, reward: bool = False) -> pd.DataFrame:
    rows = [
        {
            "id": f"{t}_en",
            "set": "gedit",
            "builder": "grpo_critic",
            "category": t,
            "language": "en",
            "executed": i != 0,
            "sc": None if i == 1 else 6.0,
            "pq": None if i == 1 else 8.0,
            "x_intersection_exist": True,
            "judge": f"{judge_model} at https://api.example/v1",
            "judge_model": judge_model,
            "judge_protocol": "published GEdit-Bench VIEScore protocol (prompts from x)"
            if published
            else NOT_PUBLISHED,
            "judge_protocol_published": published,
            "judge_is_reward_model": reward,
            "reward_model": "local critic results/bricks/critic",
        }
        for i, t in enumerate(GEDIT_TASK_TYPES)
    ]
    return pd.DataFrame(rows)


def imgedit_rows(judge_model: str, published: bool) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "id": str(i),
                "set": "imgedit",
                "builder": "sft",
                "category": t,
                "language": "en",
                "executed": True,
                "critic": 0.5,
                "imgedit_score": 3.0,
                "judge_model": judge_model,
                "judge": judge_model,
                "judge_protocol": "published" if published else NOT_PUBLISHED,
                "judge_protocol_published": published,
                "judge_is_reward_model": False,
            }
            for i, t in enumerate(IMGEDIT_TYPES)
        ]
    )


def test_published_rows_stand_beside_ours_only_with_the_same_protocol_and_judge(tmp_path):
    write_tables(pd.concat([gedit_rows("gpt-4.1-2025-04-14", True), imgedit_rows("gpt-4o", True)]), tmp_path)
    markdown = (tmp_path / "tables.md").read_text()
    gedit = section(markdown, "gedit")
    assert "## gedit_en: ours beside the published rows (same protocol, judge gpt-4.1)" in gedit
    assert "| ours: grpo_critic |" in gedit and "| Qwen-Image-Edit |" in gedit and "NOT comparable" not in gedit
    # one failed item scores 0, one the judge left unscored: counted, not averaged
    assert "Unscored by the judge: 1 of 10 edited items" in gedit and REWARD_MODEL_WARNING not in gedit
    imgedit = section(markdown, "imgedit")
    assert "## imgedit: ours beside the published rows (same protocol, judge gpt-4o)" in imgedit
    assert "| ours: sft | 3.00 |" in imgedit and "| Lego-Edit | 3.67 |" in imgedit

    write_tables(pd.concat([gedit_rows("gpt-4o-mini", True), imgedit_rows("gpt-4o", False)]), tmp_path)
    markdown = (tmp_path / "tables.md").read_text()
    gedit = section(markdown, "gedit")
    assert "## Published scores (gedit_en), NOT comparable with the table above" in gedit
    assert "ours were judged by gpt-4o-mini, the published rows by gpt-4.1" in gedit
    assert "| ours: grpo_critic |" not in gedit and "| Qwen-Image-Edit |" in gedit
    imgedit = section(markdown, "imgedit")
    assert "NOT comparable" in imgedit and "not judged under the published protocol" in imgedit
    assert f"protocol: {NOT_PUBLISHED}." in imgedit


def test_same_judge_model():
    assert same_judge_model("GPT-4o", "gpt-4o") and same_judge_model("gpt-4o-2024-08-06", "gpt-4o")
    assert not same_judge_model("gpt-4o-mini", "gpt-4o") and not same_judge_model("gpt-4.1-mini", "gpt-4.1")


def shapes_rows(separate_judge: bool) -> pd.DataFrame:
    rows = []
    for i, (executed, critic, judge) in enumerate([(True, 0.8, 7.0), (True, None, None), (False, None, None)]):
        row = {
            "id": str(i),
            "set": "shapes_open",
            "builder": "grpo_critic",
            "category": "add",
            "executed": executed,
            "valid": executed,
            "success": executed,
            "psnr": 30.0,
            "region_iou": 0.5,
            "critic": critic,
            "reward_model": "local critic results/bricks/critic",
            "judge_protocol": NOT_PUBLISHED,
            "judge_is_reward_model": not separate_judge,
            "judge": "gpt-4.1 at https://api.example/v1" if separate_judge else "local critic results/bricks/critic",
        }
        if separate_judge:
            row["judge_score"] = None if judge is None else judge / 10
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("separate_judge", [False, True])
def test_the_shapes_tables_name_their_judges(tmp_path, separate_judge):
    write_tables(shapes_rows(separate_judge), tmp_path)
    text = section((tmp_path / "tables.md").read_text(), "Builders on the shapes-world test splits")
    assert "`reward_model_score`: the stage-3 reward model (local critic results/bricks/critic)" in text
    assert "unscored: 1 of 2 edited items" in text
    assert (REWARD_MODEL_WARNING in text) == (not separate_judge)
    builders = pd.read_csv(tmp_path / "builders.csv").iloc[0]
    # a failed item scores 0, an unscored one is left out and counted: (0.8 + 0) / 2
    assert builders["open_reward_model_score"] == pytest.approx(0.4) and builders["open_reward_model_unscored"] == 1
    if separate_judge:
        assert "`judge_score`: judged by gpt-4.1 at https://api.example/v1" in text
        assert builders["open_judge_score"] == pytest.approx(0.35) and builders["open_judge_unscored"] == 1
    else:
        assert "open_judge_score" not in builders


# ---------------------------------------------------------------- the chunk job and the config
def test_the_chunk_job_hands_its_judge_and_protocol_to_the_chunk(monkeypatch, tmp_path, checkouts):
    seen = {}
    monkeypatch.setattr(runner, "run_chunk", lambda items, *a, **kw: seen.update(items=items, **kw))
    monkeypatch.setattr(runner, "load_items", lambda *a: [f"item{i}" for i in range(4)])
    critic_dir = endpoint_critic_dir(tmp_path / "critic", "http://127.0.0.1:9/v1", "reward-critic")
    judge = {"base_url": "http://127.0.0.1:8/v1", "model": "gpt-4.1", "cache": str(tmp_path / "c.sqlite")}
    runner.evaluate_chunk(
        "gedit",
        {},
        (1, 2),
        {"name": "sft"},
        tmp_path,
        critic_dir,
        tmp_path / "img",
        tmp_path / "rows.parquet",
        judge=judge,
        protocol=str(checkouts[0]),
    )
    evaluation_judge = seen["judge"]
    assert seen["items"] == ["item1", "item3"] and seen["critic"] is None
    assert evaluation_judge.identity.label == "gpt-4.1 at http://127.0.0.1:8/v1"
    assert evaluation_judge.protocol_published and evaluation_judge.scorer.gedit_protocol is not None
    assert not evaluation_judge.is_reward_model and evaluation_judge.scorer.chat.cache.path == tmp_path / "c.sqlite"


def test_config_checks_name_a_half_set_judge_and_a_checkout_without_prompts(tmp_path, checkouts):
    import yaml

    from lego_edit.config_schema import build_schema, resolve

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())
    schema = build_schema()
    judge = resolve(schema, schema["properties"]["evaluation"]["properties"]["judge"])
    assert set(config["evaluation"]["judge"]) == set(judge["properties"])
    config["evaluation"]["judge"]["model"] = "gpt-4.1"
    with pytest.raises(ConfigError, match="evaluation.judge: set both base_url and model"):
        check_config(config)
    config["evaluation"]["judge"]["base_url"] = "https://api.example/v1"
    config["evaluation"]["protocols"] = {"gedit": str(tmp_path), "imgedit": str(checkouts[1])}
    with pytest.raises(ConfigError, match=r"evaluation\.protocols\.gedit: .*vie_prompts\.py"):
        check_config(config)
    config["evaluation"]["protocols"]["gedit"] = str(checkouts[0])
    check_config(config)
