"""lib/users.py against real Postgres and cognito-local: lookups, the sub cache, the Cognito link."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from backend_flask.lib import db, users
from backend_flask.lib.errors import DatabaseUnavailable
from tests.helpers import concurrently
from toolbox import cognito, local_services, pg
from toolbox import users as tusers

PASSWORD = "Test-passw0rd!"




@pytest.fixture
def scratch_url(pg_url: str) -> Iterator[str]:
    """A database of this test's own on the session server, schema loaded."""
    url = pg.with_database(pg_url, f"cruddur_scratch_{uuid.uuid4().hex[:12]}")
    pg.create_database(url)
    pg.load_schema(url)
    yield url
    pg.drop_database(url, force=True)


def add_user(url: str, handle: str | None = None, sub: str | None = None) -> dict:
    """Insert a user row directly; return {uuid, handle, display_name, sub}."""
    handle = handle or f"u{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("INSERT INTO public.users (display_name, handle, email, cognito_user_id) "
                           "VALUES (%s, %s, %s, %s) RETURNING uuid::text",
                           (f"User {handle}", handle, f"{handle.lower()}@example.test", sub)).fetchone()
    return {"uuid": row[0], "handle": handle, "display_name": f"User {handle}", "sub": sub}


def short(user: dict) -> dict:
    return {"uuid": user["uuid"], "handle": user["handle"], "display_name": user["display_name"]}


def rename(url: str, handle: str, display_name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE public.users SET display_name = %s WHERE handle = %s", (display_name, handle))


def subs_by_handle(url: str) -> dict[str, str | None]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT handle, cognito_user_id FROM public.users").fetchall())


# ------------------------------------------------------------------ lookups the API makes

def test_user_by_cognito_sub_returns_what_the_api_needs(pool_db, pg_url):
    user = add_user(pg_url, sub=str(uuid.uuid4()))
    found = users.user_by_cognito_sub(pool_db, user["sub"])
    assert found == short(user)
    assert isinstance(found["uuid"], str)
    assert users.user_by_cognito_sub(pool_db, str(uuid.uuid4())) is None


def test_user_by_cognito_sub_matches_a_user_made_in_cognito_local(pool_db, make_user):
    user = make_user()
    assert users.user_by_cognito_sub(pool_db, user["sub"]) == short(user)


def test_user_short_finds_a_handle_in_any_case(pool_db, pg_url):
    user = add_user(pg_url, handle=f"MiXed{uuid.uuid4().hex[:8]}")
    assert users.user_short(pool_db, user["handle"].upper()) == short(user)
    assert users.user_short(pool_db, user["handle"].lower()) == short(user)
    assert users.user_short(pool_db, "nobody" + uuid.uuid4().hex) is None


@pytest.mark.parametrize("evil", [
    "x' OR '1'='1", "x'; DROP TABLE users; --", "%", "_", "%(handle)s", "\\", "' OR 1=1 --",
])
def test_sql_looking_handles_are_only_data(pool_db, pg_url, evil):
    # GIVEN users exist, one of whose handle IS the SQL-looking string
    add_user(pg_url)
    odd = add_user(pg_url, handle=f"{evil}{uuid.uuid4().hex[:6]}")
    # WHEN the string (without the suffix) is looked up, it matches nothing
    assert users.user_short(pool_db, evil) is None
    # AND the odd handle itself is found exactly, in any case
    assert users.user_short(pool_db, odd["handle"].upper()) == short(odd)
    # AND the table is still there
    assert pool_db.query_value("users/count") >= 2


@pytest.mark.parametrize("bad", ["", "a\x00b", "\ud800", "x" * 10_000])
def test_strings_postgres_cannot_hold_are_not_found_rather_than_errors(pool_db, bad):
    assert users.user_short(pool_db, bad) is None
    assert users.user_by_cognito_sub(pool_db, bad) is None


def test_lookups_raise_database_unavailable_when_postgres_is_unreachable():
    pool = db.make_pool(f"postgresql://postgres@127.0.0.1:{local_services.free_port()}/x", timeout=1.0)
    pool.open(wait=False)
    try:
        with pytest.raises(DatabaseUnavailable):
            users.user_short(db.Db(pool), "bayko")
    finally:
        pool.close()


# ------------------------------------------------------------------ UserCache

class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_user_cache_serves_hits_until_they_expire(pool_db, pg_url):
    # GIVEN a cached user
    clock = Clock()
    cache = users.UserCache(pool_db, ttl=30, clock=clock)
    user = add_user(pg_url, sub=str(uuid.uuid4()))
    assert cache.get(user["sub"]) == short(user)
    # WHEN their name changes in Postgres
    rename(pg_url, user["handle"], "Renamed")
    # THEN the cache keeps answering with the old one while fresh
    clock.now += 29
    assert cache.get(user["sub"])["display_name"] == user["display_name"]
    # AND reads the new one once the entry expired
    clock.now += 2
    assert cache.get(user["sub"])["display_name"] == "Renamed"


def test_user_cache_never_caches_a_miss(pool_db, pg_url):
    cache = users.UserCache(pool_db, ttl=300, clock=Clock())
    sub = str(uuid.uuid4())
    assert cache.get(sub) is None
    assert len(cache) == 0
    # WHEN the user appears right after (signed up between two requests)
    user = add_user(pg_url, sub=sub)
    # THEN the next lookup finds them
    assert cache.get(sub) == short(user)


def test_user_cache_returns_copies_and_can_forget(pool_db, pg_url):
    cache = users.UserCache(pool_db, ttl=300, clock=Clock())
    user = add_user(pg_url, sub=str(uuid.uuid4()))
    cache.get(user["sub"])["display_name"] = "mutated by a caller"
    assert cache.get(user["sub"]) == short(user)
    rename(pg_url, user["handle"], "Renamed")
    cache.invalidate(user["sub"])
    assert cache.get(user["sub"])["display_name"] == "Renamed"


def test_user_cache_is_bounded_and_drops_the_least_recently_used(pool_db, pg_url):
    cache = users.UserCache(pool_db, ttl=300, max_size=2, clock=Clock())
    a, b, c = (add_user(pg_url, sub=str(uuid.uuid4())) for _ in range(3))
    cache.get(a["sub"])
    cache.get(b["sub"])
    cache.get(a["sub"])  # a is now more recent than b
    cache.get(c["sub"])
    assert len(cache) == 2
    rename(pg_url, b["handle"], "B again")
    rename(pg_url, a["handle"], "A again")
    assert cache.get(a["sub"])["display_name"] == a["display_name"]  # a still cached
    assert cache.get(b["sub"])["display_name"] == "B again"  # b was evicted, so re-read


def test_user_cache_with_zero_ttl_always_reads(pool_db, pg_url):
    cache = users.UserCache(pool_db, ttl=0)
    user = add_user(pg_url, sub=str(uuid.uuid4()))
    cache.get(user["sub"])
    rename(pg_url, user["handle"], "Fresh")
    assert cache.get(user["sub"])["display_name"] == "Fresh"
    assert len(cache) == 0


def test_user_cache_is_safe_to_share_between_threads(pool_db, pg_url):
    # GIVEN a small cache shared by request threads asking for several users
    cache = users.UserCache(pool_db, ttl=300, max_size=3)
    people = [add_user(pg_url, sub=str(uuid.uuid4())) for _ in range(5)]

    def worker(offset: int) -> None:
        for i in range(40):
            person = people[(offset + i) % len(people)]
            assert cache.get(person["sub"]) == short(person)

    concurrently(worker, [(n,) for n in range(6)], timeout=30)
    # THEN every answer was right and the bound held
    assert len(cache) <= 3


# ------------------------------------------------------------------ the Cognito link

def test_plan_matches_by_handle_in_any_case_and_reports_the_rest():
    rows = [{"handle": "Alice", "cognito_user_id": None}, {"handle": "bob", "cognito_user_id": "b-1"},
            {"handle": "carol", "cognito_user_id": "c-old"}, {"handle": "dave", "cognito_user_id": None}]
    pool = [{"handle": "alice", "sub": "a-1"}, {"handle": "bob", "sub": "b-1"}, {"handle": "carol", "sub": "c-2"},
            {"handle": "erin", "sub": "e-1"}, {"handle": "dave", "sub": "d-1"}, {"handle": "DAVE", "sub": "d-2"},
            {"handle": None, "sub": "x"}]
    plan = tusers.plan_cognito_user_ids(rows, pool)
    assert plan["changed"] == [("Alice", None, "a-1"), ("carol", "c-old", "c-2")]
    assert plan["unmatched_db"] == ["dave"]
    assert plan["unmatched_pool"] == ["erin"]
    assert plan["ambiguous"] == ["dave"]


def test_plan_unlinks_a_row_whose_sub_now_belongs_to_another_handle():
    rows = [{"handle": "old_name", "cognito_user_id": "s-1"}, {"handle": "new_name", "cognito_user_id": None}]
    plan = tusers.plan_cognito_user_ids(rows, [{"handle": "new_name", "sub": "s-1"}])
    assert plan["changed"] == [("old_name", "s-1", None), ("new_name", None, "s-1")]
    assert plan["unmatched_db"] == ["old_name"]


def test_update_cognito_user_ids_maps_cognito_local_subs_onto_the_right_rows(scratch_url, idp, config):
    # GIVEN two users signed up in cognito-local and rows for them (one handle in other case), plus an orphan row
    tag = uuid.uuid4().hex[:8]
    subs = {h: cognito.sign_up(idp, config.cognito_user_pool_id, config.cognito_client_id,
                               email=f"{h}@example.test", password=PASSWORD, handle=h, display_name=h)
            for h in (f"ann{tag}", f"Ben{tag}")}
    add_user(scratch_url, f"ann{tag}")
    add_user(scratch_url, f"ben{tag}")
    add_user(scratch_url, f"orphan{tag}")
    # WHEN the ids are updated from the pool
    report = tusers.update_cognito_user_ids(scratch_url, idp, config.cognito_user_pool_id)
    # THEN each row has its own user's sub, and the orphan is listed, untouched
    assert subs_by_handle(scratch_url) == {f"ann{tag}": subs[f"ann{tag}"], f"ben{tag}": subs[f"Ben{tag}"],
                                           f"orphan{tag}": None}
    assert sorted(report["changed"]) == sorted([(f"ann{tag}", None, subs[f"ann{tag}"]),
                                                (f"ben{tag}", None, subs[f"Ben{tag}"])])
    assert report["unmatched_db"] == [f"orphan{tag}"]
    # AND a second run changes nothing
    assert tusers.update_cognito_user_ids(scratch_url, idp, config.cognito_user_pool_id)["changed"] == []


def test_update_cognito_user_ids_fixes_swapped_subs_despite_the_unique_index(scratch_url, idp, config):
    tag = uuid.uuid4().hex[:8]
    one, two = f"one{tag}", f"two{tag}"
    subs = {h: cognito.sign_up(idp, config.cognito_user_pool_id, config.cognito_client_id,
                               email=f"{h}@example.test", password=PASSWORD, handle=h, display_name=h)
            for h in (one, two)}
    # GIVEN rows holding each other's sub
    add_user(scratch_url, one, subs[two])
    add_user(scratch_url, two, subs[one])
    # WHEN updated
    tusers.update_cognito_user_ids(scratch_url, idp, config.cognito_user_pool_id)
    # THEN both are right
    assert subs_by_handle(scratch_url) == subs


def test_token_for_handle_signs_in_as_that_user(pg_url, idp, config, make_user):
    user = make_user()
    token = tusers.token_for_handle(pg_url, idp, config.cognito_client_id, user["handle"].upper(), PASSWORD)
    assert token.count(".") == 2
    with pytest.raises(LookupError):
        tusers.token_for_handle(pg_url, idp, config.cognito_client_id, "nobody" + uuid.uuid4().hex, PASSWORD)


def test_all_users_and_sign_up_all_create_every_row_in_the_pool(scratch_url, idp, config):
    tag = uuid.uuid4().hex[:8]
    add_user(scratch_url, f"signup{tag}")
    assert [u["handle"] for u in tusers.all_users(scratch_url)] == [f"signup{tag}"]
    assert tusers.sign_up_all(scratch_url, idp, config.cognito_user_pool_id, config.cognito_client_id, PASSWORD) == 1
    assert f"signup{tag}" in tusers.pool_users_by_handle(idp, config.cognito_user_pool_id)


def test_create_signed_up_user_links_the_new_row_to_its_cognito_sub(pg_url, idp, config, pool_db):
    # GIVEN a user created in the pool and in Postgres at once
    handle = f"Linked{uuid.uuid4().hex[:8]}"
    made = tusers.create_signed_up_user(pg_url, idp, config.cognito_user_pool_id, config.cognito_client_id,
                                       handle=handle, display_name="Linked User",
                                       email=f"{handle.lower()}@example.test", password="Linked-passw0rd!")
    # THEN the row is found by the sub, and the token is that user's access token
    assert users.user_by_cognito_sub(pool_db, made["sub"]) == {"uuid": made["uuid"], "handle": handle,
                                                                 "display_name": "Linked User"}
    claims = idp.get_user(AccessToken=made["token"])
    assert {a["Name"]: a["Value"] for a in claims["UserAttributes"]}["sub"] == made["sub"]
