"""The hash chain under concurrent writers: threads with their own database connections, committed data."""
import threading

import pytest
from django.db import connections, transaction

from automations import audit
from automations.models import AuditEvent
from tests.audit_helpers import verify
from tests.conftest import require_postgres

WRITERS = 8
EVENTS_EACH = 25


@pytest.mark.postgres(reason="concurrent writers; SQLite serialises them")
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_keep_a_gapless_valid_chain():
    require_postgres("concurrent writers; SQLite serialises them")
    barrier = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            for i in range(EVENTS_EACH):
                with transaction.atomic():
                    audit.record(action="test.concurrent", actor=None, actor_name=f"writer-{n}",
                                 details={"writer": n, "i": i})
        except BaseException as error:  # reported below; a thread's exception is otherwise lost
            errors.append(error)
        finally:
            connections.close_all()  # this thread's own connection

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    total = WRITERS * EVENTS_EACH
    sequences = list(AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True))
    assert sequences == list(range(1, total + 1))
    # Every writer's events are all there, in its own order.
    for n in range(WRITERS):
        mine = list(AuditEvent.objects.filter(actor_name=f"writer-{n}").order_by("sequence")
                    .values_list("details__i", flat=True))
        assert mine == list(range(EVENTS_EACH))
    # Writers interleaved (otherwise this test proves nothing about concurrency).
    names = list(AuditEvent.objects.order_by("sequence").values_list("actor_name", flat=True))
    assert sum(1 for a, b in zip(names, names[1:]) if a != b) > WRITERS
    times = list(AuditEvent.objects.order_by("sequence").values_list("occurred_at", flat=True))
    assert times == sorted(times)  # time order = sequence order, which time-range search relies on
    code, out, err = verify("--no-digests")
    assert code == 0, err
    assert f"({total}) verified" in out


@pytest.mark.django_db(transaction=True)
def test_record_refuses_to_run_outside_a_transaction():
    with pytest.raises(RuntimeError, match="inside transaction.atomic"):
        audit.record(action="test.autocommit", actor=None)
    assert not AuditEvent.objects.exists()
