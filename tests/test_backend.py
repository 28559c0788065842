import mlx.core as mx

from lift_mlx import backend


def test_the_wired_limit_is_the_devices_recommended_size_where_it_has_one():
    recommended = mx.device_info().get("max_recommended_working_set_size")
    before = backend.use_recommended_wired_limit()
    if recommended is None:  # the CPU: nothing to wire, nothing changed
        assert before is None
        return
    try:
        assert backend.use_recommended_wired_limit() == recommended  # the limit now in force
    finally:
        mx.set_wired_limit(before)
