import threading
from pathlib import Path

from rtserver.messages import StoredMessage
from rtserver.store import STATUS_ENDED, STATUS_ERASED, STATUS_LIVE, Question, Store


def test_session_lifecycle_survives_reopen(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    record, token = store.create_session("Ada", "Engineer", [Question("Why us?", 90)])
    assert record.status == "created" and record.questions == (Question("Why us?", 90),)
    assert store.check_join_token(record.id, token)
    assert not store.check_join_token(record.id, token + "x")
    assert store.mark_live(record.id)
    assert not store.mark_live(record.id)  # a session is joined once
    store.append_message(StoredMessage(record.id, 0, "signal", {"t": 0}))
    store.append_message(StoredMessage(record.id, 1, "final", {"score": 50}))
    store.mark_ended(record.id, "hangup")
    store.close()

    reopened = Store(tmp_path / "db.sqlite3")
    again = reopened.get_session(record.id)
    assert again is not None and again.status == STATUS_ENDED and again.end_reason == "hangup"
    assert [m.payload for m in reopened.messages(record.id)] == [{"t": 0}, {"score": 50}]
    assert [m.seq for m in reopened.messages(record.id, after_seq=0)] == [1]
    final = reopened.final_message(record.id)
    assert final is not None and final.payload == {"score": 50}


def test_join_token_is_stored_hashed(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = Store(path)
    _, token = store.create_session(None, None, [])
    store.close()
    assert token.encode() not in path.read_bytes()


def test_erase_removes_candidate_data_but_keeps_audit(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    record, _ = store.create_session("Ada", "Engineer", [])
    store.mark_live(record.id)
    store.append_message(StoredMessage(record.id, 0, "signal", {"t": 0}))
    store.audit("hr@127.0.0.1", "view_session", record.id)
    assert store.erase(record.id)
    erased = store.get_session(record.id)
    assert erased is not None
    assert (erased.candidate, erased.job, erased.status) == (None, None, STATUS_ERASED)
    assert store.messages(record.id) == []
    assert [entry["action"] for entry in store.audit_log(record.id)] == ["view_session"]
    assert store.sessions_with_status(STATUS_LIVE) == []


def test_two_connections_write_at_once_without_losing_any(tmp_path: Path) -> None:
    """Workers and the server each hold their own connection to the file (WAL + busy
    timeout): concurrent writers wait for each other instead of failing."""
    path = tmp_path / "db.sqlite3"
    first = Store(path)
    record, _ = first.create_session(None, None, [])
    stores = [first, Store(path), Store(path)]

    def write(store: Store, offset: int) -> None:
        for i in range(200):
            store.append_message(StoredMessage(record.id, offset + i, "signal", {"i": i}))
            store.audit("test", "write", record.id)

    threads = [
        threading.Thread(target=write, args=(store, 1000 * n)) for n, store in enumerate(stores)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(first.messages(record.id)) == 600
    assert len(stores[1].audit_log(record.id)) == 600
    for store in stores:
        store.close()
