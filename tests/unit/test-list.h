/* test-list.h - every unit test, in the order the runner runs them. Each
 * line names a TEST_IMPL of some test_*.c; runner.c includes this list
 * twice, once to declare the tests and once to build its table. */
UNIT_TEST(routes_longest_prefix)
UNIT_TEST(routes_segment_boundary)
UNIT_TEST(routes_trailing_slash)
UNIT_TEST(routes_catch_all)
UNIT_TEST(routes_odd_paths)
UNIT_TEST(routes_same_as_scan)
UNIT_TEST(routes_thousand)
UNIT_TEST(routes_handle_only)
UNIT_TEST(routes_names_not_found)
UNIT_TEST(routes_empty_and_null)
UNIT_TEST(routes_shared_by_threads)
UNIT_TEST(answer_queue_order_and_wakeups)
UNIT_TEST(answer_queue_producers)
UNIT_TEST(park_ping_pong)
UNIT_TEST(park_wake_before_wait)
UNIT_TEST(park_deadline)
