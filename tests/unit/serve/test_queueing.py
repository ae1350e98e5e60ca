import math

import pytest

from mlkit.serve.queueing import BatchCost, simulate


def test_one_worker_without_batching_matches_the_m_d_1_queue():
    # Pollaczek-Khinchine: with deterministic service S at load rho, the mean
    # wait is rho * S / (2 * (1 - rho)).
    service, rate = 0.010, 70.0
    rho = rate * service
    result = simulate(
        rate, BatchCost(fixed_s=service, per_item_s=0.0), workers=1, max_batch_size=1
    )

    expected_wait = rho * service / (2 * (1 - rho))
    assert result.mean_s - service == pytest.approx(expected_wait, rel=0.05)
    assert result.utilization == pytest.approx(rho, rel=0.02)
    assert result.mean_batch == 1.0


def test_a_lone_request_costs_one_batch_and_the_overhead():
    cost = BatchCost(fixed_s=0.004, per_item_s=0.012)
    result = simulate(
        0.5, cost, workers=2, max_batch_size=16, overhead_s=0.002, requests=2000
    )

    assert result.p50_s == pytest.approx(0.018)
    assert result.p99_s == pytest.approx(0.018)


def test_max_wait_delays_a_lone_request_and_a_full_batch_leaves_early():
    cost = BatchCost(fixed_s=0.001, per_item_s=0.001)
    lone = simulate(0.5, cost, workers=1, max_batch_size=4, max_wait_s=0.05)
    assert lone.p50_s == pytest.approx(0.05 + cost(1))

    # Far more than four arrivals per 50 ms: batches fill before the wait ends.
    busy = simulate(500.0, cost, workers=1, max_batch_size=4, max_wait_s=0.05)
    assert busy.mean_batch > 3.5
    assert busy.p50_s < 0.02


def test_batching_keeps_up_where_one_at_a_time_could_not():
    # One request alone takes 20 ms: at most 50 requests/s without batching.
    cost = BatchCost(fixed_s=0.015, per_item_s=0.005)
    result = simulate(80.0, cost, workers=1, max_batch_size=8)

    assert result.mean_batch > 1.5
    assert result.utilization < 1.0
    assert result.p99_s < 0.5


def test_more_workers_wait_less_at_the_same_load():
    cost = BatchCost(fixed_s=0.0, per_item_s=0.010)
    one = simulate(60.0, cost, workers=1, max_batch_size=1)
    two = simulate(120.0, cost, workers=2, max_batch_size=1)

    assert one.utilization == pytest.approx(two.utilization, rel=0.03)
    assert two.p95_s < one.p95_s


def test_results_are_reproducible_by_seed():
    cost = BatchCost(fixed_s=0.002, per_item_s=0.010)
    a = simulate(100.0, cost, workers=2, max_batch_size=16, seed=3, requests=5000)
    b = simulate(100.0, cost, workers=2, max_batch_size=16, seed=3, requests=5000)
    c = simulate(100.0, cost, workers=2, max_batch_size=16, seed=4, requests=5000)

    assert a == b
    assert a != c


def test_a_rate_beyond_capacity_is_refused():
    cost = BatchCost(fixed_s=0.004, per_item_s=0.012)
    assert cost.capacity_rps(2, 16) == pytest.approx(2 * 16 / 0.196)

    with pytest.raises(ValueError, match=r"below the capacity of 163\.3"):
        simulate(170.0, cost, workers=2, max_batch_size=16)
    with pytest.raises(ValueError, match="rate_rps must be above 0"):
        simulate(0.0, cost, workers=2, max_batch_size=16)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"workers": 0},
        {"max_batch_size": 0},
        {"requests": 0},
        {"max_wait_s": -1.0},
        {"max_wait_s": math.inf},
        {"overhead_s": -0.001},
    ],
)
def test_bad_settings_are_refused(kwargs):
    settings = {"workers": 1, "max_batch_size": 4, **kwargs}
    with pytest.raises(ValueError, match="must be"):
        simulate(1.0, BatchCost(fixed_s=0.01, per_item_s=0.0), **settings)


def test_fit_recovers_a_line_through_measured_batches():
    cost = BatchCost.fit({1.0: 0.0169, 9.8: 0.1227, 15.8: 0.1949})

    assert cost.per_item_s == pytest.approx(0.012, abs=0.0003)
    assert cost.fixed_s == pytest.approx(0.0049, abs=0.0005)


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ({1.0: 0.01}, "at least two different sizes"),
        ({1.0: 0.02, 8.0: 0.01}, "may not get cheaper"),
        ({1.0: -0.02, 2.0: 0.001}, "may not get cheaper"),
        ({1.0: math.nan, 2.0: 0.01}, "finite"),
    ],
)
def test_fit_refuses_measurements_that_make_no_cost(points, message):
    with pytest.raises(ValueError, match=message):
        BatchCost.fit(points)
