from relay.buckets import TokenBucket


def test_a_full_bucket_holds_its_burst_and_refills_at_its_rate() -> None:
    bucket = TokenBucket.full(60, now=0.0, burst_s=10.0)
    assert bucket.capacity == 10.0 and bucket.level == 10.0
    assert bucket.reserve(10, now=0.0) == 0.0
    assert bucket.reserve(2, now=0.0) == 2.0  # in debt by 2 at one per second
    bucket.refill(now=5.0)
    assert bucket.level == 3.0


def test_a_reservation_is_capped_at_the_capacity_and_can_be_given_back() -> None:
    bucket = TokenBucket.full(6, now=0.0, burst_s=10.0)  # capacity never below one
    assert bucket.capacity == 1.0
    assert bucket.reserve(100, now=0.0) == 0.0
    bucket.give_back(100, now=0.0)
    assert bucket.level == 1.0


def test_wait_until_counts_the_debt_at_the_rate() -> None:
    bucket = TokenBucket(per_minute=120, level=-1.0, stamp=0.0)
    assert bucket.wait_until(1.0) == 1.0
    assert TokenBucket(per_minute=120, level=5.0, stamp=0.0).wait_until(1.0) == 0.0
