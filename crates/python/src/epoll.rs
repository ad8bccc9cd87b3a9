//! A Linux epoll set: the three system calls the asyncio poller (`poller`) makes, behind a safe
//! interface (the standard library and socket2 have no epoll; a crate for three calls would
//! cost more than it saves).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// How many ready sockets one [`Epoll::ready`] returns at most; more stay ready for the next.
pub const BATCH: usize = 64;

/// An epoll set of one-shot registrations.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// A new, empty set (closed on exec).
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; the descriptor it returns is ours alone.
        #[allow(unsafe_code)]
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        #[allow(unsafe_code)]
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    /// The set's own descriptor, readable while a registered socket is ready.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Arms `fd` once: readable (and writable, with `write`) reports it a single time, until
    /// armed again. `modify`: it is registered already (an error `NotFound` says it no longer
    /// is: closed since); otherwise it is added (an error `AlreadyExists` says it was).
    pub fn arm(&self, fd: RawFd, write: bool, modify: bool) -> io::Result<()> {
        let mut events = libc::EPOLLIN | libc::EPOLLONESHOT;
        if write {
            events |= libc::EPOLLOUT;
        }
        let (Ok(events), Ok(data)) = (u32::try_from(events), u64::try_from(fd)) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        let mut event = libc::epoll_event { events, u64: data };
        let op = if modify {
            libc::EPOLL_CTL_MOD
        } else {
            libc::EPOLL_CTL_ADD
        };
        // SAFETY: `event` is a valid epoll_event for the duration of the call.
        #[allow(unsafe_code)]
        let done = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &raw mut event) };
        if done < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The registered sockets ready now, without waiting: at most [`BATCH`].
    pub fn ready(&self) -> io::Result<Vec<RawFd>> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
        let capacity = libc::c_int::try_from(BATCH).unwrap_or(1);
        // SAFETY: `events` holds `capacity` entries the kernel may write.
        #[allow(unsafe_code)]
        let count =
            unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), capacity, 0) };
        if count < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::Interrupted => Ok(Vec::new()),
                _ => Err(error),
            };
        }
        let count = usize::try_from(count).unwrap_or(0).min(BATCH);
        Ok(events[..count]
            .iter()
            .filter_map(|event| RawFd::try_from(event.u64).ok())
            .collect())
    }
}
