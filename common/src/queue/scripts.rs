//! The Lua scripts that make up the queue protocol, each in its own file under `lua/`
//! with a header documenting its KEYS and ARGV. `lib.lua` and `admission.lua` are
//! prepended to each.

use redis::Script;
use std::sync::LazyLock;

macro_rules! script {
    ($name:ident, $file:literal) => {
        pub(crate) static $name: LazyLock<Script> = LazyLock::new(|| {
            Script::new(concat!(
                include_str!("lua/lib.lua"),
                include_str!("lua/admission.lua"),
                include_str!($file)
            ))
        });
    };
}

/// enqueue.lua whole, for the enqueues that send it with EVAL inside a MULTI (a staged
/// group's, in enqueue.rs): there a missing script must not fail after the records are in.
pub(crate) const ENQUEUE_SOURCE: &str = concat!(
    include_str!("lua/lib.lua"),
    include_str!("lua/admission.lua"),
    include_str!("lua/enqueue.lua")
);
pub(crate) static ENQUEUE: LazyLock<Script> = LazyLock::new(|| Script::new(ENQUEUE_SOURCE));
script!(CLAIM, "lua/claim.lua");
script!(FINISH, "lua/finish.lua");
script!(RELEASE, "lua/release.lua");
script!(REAP, "lua/reap.lua");
script!(CANCEL, "lua/cancel.lua");
script!(RETRY, "lua/retry.lua");
script!(PROMOTE, "lua/promote.lua");
script!(RESTORE, "lua/restore.lua");
script!(EXPIRE, "lua/expire.lua");
script!(HEARTBEAT, "lua/heartbeat.lua");
script!(WHY, "lua/why.lua");
script!(CENSUS, "lua/census.lua");
script!(RECOUNT, "lua/recount.lua");
script!(CONFIGURE, "lua/configure.lua");
script!(PREEMPT, "lua/preempt.lua");
script!(WATCH, "lua/watch.lua");
script!(SEEK, "lua/seek.lua");
script!(ACK, "lua/ack.lua");
