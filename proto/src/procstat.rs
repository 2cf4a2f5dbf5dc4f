//! CPU figures from Linux `/proc/<pid>/stat` and `/proc/<pid>/task/<tid>/stat` lines, which the
//! node (its room workers' share) and `outpost bench` (the echo baseline's CPU) both read.

/// The thread or process name and its user + system CPU in clock ticks (`_SC_CLK_TCK` per
/// second), or `None` for a line that is not a stat line.
///
/// The name is parsed up to the *last* `)`, because a name may itself hold spaces and parentheses.
pub fn cpu_ticks(stat: &str) -> Option<(&str, u64)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1;
    // After the name: state, ppid, pgrp, session, tty_nr, tpgid, flags, minflt, cminflt, majflt,
    // cmajflt, then utime and stime (fields 14 and 15 of proc(5)).
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((name, utime + stime))
}

/// Converts clock ticks, as [`cpu_ticks`] returns them, to seconds with this system's tick rate.
pub fn ticks_to_seconds(ticks: u64) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // A failed sysconf (-1) or a nonsense rate must not turn CPU figures negative or infinite.
    ticks as f64 / hz.max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_name_and_cpu_and_refuses_what_is_not_a_stat_line() {
        let line = |name: &str| format!("4242 ({name}) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 1 0");
        assert_eq!(cpu_ticks(&line("room-worker-0")), Some(("room-worker-0", 175)));
        assert_eq!(cpu_ticks(&line("a (b) c")), Some(("a (b) c", 175)), "a name with ')' in it");
        assert_eq!(cpu_ticks("4242 (room-worker-0) S 1"), None, "truncated line");
        assert_eq!(cpu_ticks(&line("x").replace("150", "-1")), None, "not a tick count");
        assert_eq!(cpu_ticks("garbage"), None);
        assert_eq!(cpu_ticks(""), None);
    }

    #[test]
    fn ticks_convert_at_the_system_rate() {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert!(hz > 0);
        assert_eq!(ticks_to_seconds(hz * 3), 3.0);
        assert_eq!(ticks_to_seconds(0), 0.0);
    }
}
