"""CSV, TSV and Parquet uploads, with column mappings (plain and LLaMA-Factory style)."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import Account
from tests.support.datasets import all_rows, imported, post_dataset

QA_CSV = (
    b"id,question,answer\n"
    b'1,"What is 2+2?","4"\n'
    b'2,"A question\nover two lines","with ""quotes"", and a comma"\n'
    b"3,Capital of France?,Paris\n"
)


def _parquet(table: pa.Table, **kwargs) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **kwargs)
    return buffer.getvalue()


def test_csv_with_a_plain_mapping(client, alice: Account) -> None:
    mapping = {"prompt": "question", "completion": "answer"}
    body = imported(client, alice, "qa.csv", QA_CSV, mapping=mapping)
    assert (body["kind"], body["format"], body["num_rows"]) == ("sft", "trl_prompt_completion", 3)
    assert "question" in body["detection"]
    rows = all_rows(client, alice, body["id"])
    assert rows[1]["messages"] == [
        {"role": "user", "content": "A question\nover two lines"},
        {"role": "assistant", "content": 'with "quotes", and a comma'},
    ]


def test_csv_with_a_llamafactory_entry(client, alice: Account) -> None:
    mapping = {"columns": {"prompt": "question", "response": "answer"}}
    body = imported(client, alice, "qa.csv", QA_CSV, mapping=mapping)
    assert (body["kind"], body["format"]) == ("sft", "alpaca")
    assert all_rows(client, alice, body["id"])[2]["messages"][-1]["content"] == "Paris"


def test_csv_errors_name_the_physical_line_and_the_users_column(client, alice: Account) -> None:
    raw = QA_CSV + b'4,"Another\n\nmultiline",\n'
    status, body = post_dataset(
        client, alice, "qa.csv", raw, mapping={"instruction": "question", "output": "answer"}
    )
    assert status == 422
    assert body["errors"] == [
        {
            "line": 6,
            "field": "answer",
            "message": "field 'answer' is empty: nothing for the assistant to learn",
        }
    ]


def test_csv_rows_with_the_wrong_number_of_cells(client, alice: Account) -> None:
    status, body = post_dataset(client, alice, "t.csv", b"instruction,output\na,b\nc,d,e\n")
    assert status == 422 and body["errors"] == [
        {"line": 3, "message": "expected 2 columns, found 3"}
    ]


def test_tsv_and_kto_labels_as_words(client, alice: Account) -> None:
    raw = b"prompt\tcompletion\tlabel\nhi\thello\ttrue\nhi\tgo away\tFalse\n"
    body = imported(client, alice, "kto.tsv", raw)
    assert body["kind"] == "kto"
    assert [r["label"] for r in all_rows(client, alice, body["id"])] == [True, False]


def test_csv_label_that_is_not_boolean(client, alice: Account) -> None:
    raw = b"prompt,completion,label\nhi,hello,maybe\n"
    status, body = post_dataset(client, alice, "kto.csv", raw)
    assert status == 422
    assert body["errors"][0]["field"] == "label"
    assert body["errors"][0]["message"].startswith("label not boolean")


def test_parquet_with_a_mapping_and_row_numbers(client, alice: Account) -> None:
    table = pa.table(
        {
            "q": ["one", "two", "three", "four"],
            "a": ["1", "2", "", "4"],
            "score": [0.5, 0.1, 0.2, 0.9],
        }
    )
    raw = _parquet(table, row_group_size=2)
    mapping = {"instruction": "q", "output": "a"}
    status, body = post_dataset(client, alice, "t.parquet", raw, mapping=mapping)
    assert status == 422 and body["errors"][0]["line"] == 3
    assert body["errors"][0]["field"] == "a"
    body = imported(client, alice, "t.parquet", raw, mapping=mapping, skip_invalid="true")
    assert (body["format"], body["num_rows"], body["skipped"]) == ("alpaca", 3, 1)
    assert "PARQUET" in body["detection"]


def test_parquet_conversations_and_gzip(client, alice: Account) -> None:
    import gzip

    messages = [
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
    ]
    raw = _parquet(pa.table({"messages": messages, "label": [True, False]}))
    for name, content in (("c.parquet", raw), ("c.parquet.gz", gzip.compress(raw))):
        body = imported(client, alice, name, content)
        assert (body["kind"], body["format"], body["num_rows"]) == ("kto", "openai", 2)
        rows = all_rows(client, alice, body["id"])
        assert rows[1] == {"messages": messages[1], "label": False}


def test_a_damaged_parquet_file_is_refused(client, alice: Account) -> None:
    status, body = post_dataset(client, alice, "x.parquet", b"PAR1 not really")
    assert status == 422 and "Parquet" in body["detail"]


def test_txt_is_one_text_row_per_non_blank_line(client, alice: Account) -> None:
    raw = "第一行\n\nsecond line\r\n   \nthird\n".encode()
    body = imported(client, alice, "corpus.txt", raw)
    assert (body["kind"], body["format"], body["num_rows"]) == ("text", "text", 3)
    rows = all_rows(client, alice, body["id"])
    assert rows == [{"text": "第一行"}, {"text": "second line"}, {"text": "third"}]
