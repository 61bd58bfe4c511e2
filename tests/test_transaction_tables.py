"""The four tables are complete, no-ops are no-ops, and matching keys follow 17.1.3 / 17.2.3."""

from pathlib import Path

import pytest
from test_transaction_fixtures import UDP_PEER, request, response

from psp.matching import client_key, response_key, server_key
from psp.timers import TimerSettings
from psp.transaction import EVENTS, IGNORED, TABLES, Kind, State, Transaction, derived_request

FIGURE_STATES = {
    Kind.ICT: {State.INITIAL, State.CALLING, State.PROCEEDING, State.COMPLETED, State.ACCEPTED, State.TERMINATED},
    Kind.NICT: {State.INITIAL, State.TRYING, State.PROCEEDING, State.COMPLETED, State.TERMINATED},
    Kind.IST: {State.INITIAL, State.PROCEEDING, State.COMPLETED, State.CONFIRMED, State.ACCEPTED, State.TERMINATED},
    Kind.NIST: {State.INITIAL, State.TRYING, State.PROCEEDING, State.COMPLETED, State.TERMINATED},
}


@pytest.mark.parametrize("kind", list(Kind))
def test_every_state_event_pair_is_a_row_or_explicitly_ignored(kind):
    table, ignored = TABLES[kind], IGNORED[kind]
    assert set(ignored) == FIGURE_STATES[kind]
    rows = set(table)
    skipped = {(state, event) for state, events in ignored.items() for event in events}
    assert not rows & skipped, "a pair cannot be both handled and ignored"
    everything = {(state, event) for state in FIGURE_STATES[kind] for event in EVENTS[kind]}
    assert rows | skipped == everything
    assert {next_state for _, next_state in table.values()} <= FIGURE_STATES[kind]


@pytest.mark.parametrize("kind", list(Kind))
def test_terminated_is_final(kind):
    assert not [pair for pair in TABLES[kind] if pair[0] is State.TERMINATED]


def _ignored_pairs():
    for kind, states in IGNORED.items():
        for state, events in states.items():
            for event in events:
                yield kind, state, event


@pytest.mark.parametrize(("kind", "state", "event"), list(_ignored_pairs()))
def test_an_ignored_pair_changes_nothing(kind, state, event):
    req = request("INVITE" if kind in (Kind.ICT, Kind.IST) else "OPTIONS")
    tx = Transaction(kind, req, UDP_PEER, TimerSettings())
    tx.state = state
    assert tx.handle(event, req) is None
    assert tx.state is state


# --- matching ----------------------------------------------------------------------------


def test_response_matches_its_client_transaction_by_branch_and_cseq_method():
    invite = request(branch="z9hG4bK-c1")
    assert response_key(response(invite, 180)) == client_key(invite)
    cancel = derived_request(invite, "CANCEL")
    assert response_key(response(cancel, 200)) == client_key(cancel) != client_key(invite)
    assert response_key(response(request(branch="z9hG4bK-c2"), 180)) != client_key(invite)


def test_request_retransmission_and_ack_match_the_invite_server_transaction():
    invite = request()
    assert server_key(request()) == server_key(invite)
    assert server_key(request("ACK", cseq_method="ACK")) == server_key(invite)
    # same branch but another sent-by, or another method, is another transaction
    assert server_key(request(via="192.0.2.11:5060")) != server_key(invite)
    assert server_key(request("CANCEL")) != server_key(invite)
    assert server_key(request("CANCEL"), method="INVITE") == server_key(invite)


def test_sent_by_host_compares_case_insensitively():
    assert server_key(request(via="PC33.Example.COM")) == server_key(request(via="pc33.example.com"))


def test_rfc2543_fallback_without_magic_cookie():
    invite = request(branch=None)
    assert server_key(request(branch=None)) == server_key(invite)
    assert server_key(request(branch=None, call_id="other")) != server_key(invite)
    assert server_key(request(branch=None, cseq=2)) != server_key(invite)
    # the ACK carries the tag of the final response; the IST files itself under it too
    ack = request("ACK", branch=None, to_tag="uas-1")
    assert server_key(ack) != server_key(invite)
    assert server_key(ack) == server_key(invite, to_tag="uas-1")
    # a CANCEL finds its INVITE with the same fields
    assert server_key(request("CANCEL", branch=None), method="INVITE") == server_key(invite)
    # a branch without the cookie is not trusted alone
    assert server_key(request(branch="old-1")) != server_key(request(branch="old-1", call_id="x"))


def test_cancel_is_built_from_the_request_it_cancels():
    invite = request(headers="Route: <sip:p1.example.com;lr>\r\n")
    cancel = derived_request(invite, "CANCEL")
    assert cancel.method == "CANCEL" and str(cancel.uri) == str(invite.uri)
    assert str(cancel.top_via) == str(invite.top_via) and len(cancel.vias) == 1
    assert (cancel.cseq.number, cancel.cseq.method) == (1, "CANCEL")
    assert cancel.header("To") == invite.header("To") and cancel.header("From") == invite.header("From")
    assert cancel.header_values("Route") == ["<sip:p1.example.com;lr>"]
    assert cancel.max_forwards == 70


def test_the_tables_in_docs_match_the_code():
    text = (Path(__file__).parent.parent / "docs" / "transactions.md").read_text()
    for kind, table in TABLES.items():
        section = text.split(f"### {kind.value}\n", 1)[1].strip().split("\n\n", 1)[0]
        rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines()[2:]]
        documented = sorted((state, event, next_state) for state, event, _, next_state in rows)
        expected = sorted(
            (state.value, event.value if isinstance(event.value, str) else f"Timer {event.value.value} fires",
             next_state.value)
            for (state, event), (_, next_state) in table.items()
        )
        assert documented == expected
