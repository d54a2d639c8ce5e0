//! The PostgreSQL store against a real server (tests/setup-machine.sh
//! starts one; TOKENVAULT_TEST_PG_URL points elsewhere).
