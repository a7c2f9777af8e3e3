package pathwatch

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrNotReported reports a directory on a filesystem whose changes
// inotify may not see.
var ErrNotReported = errors.New("filesystem does not report its changes to inotify")

// reportsChanges returns nil when the directory at path is on a
// filesystem whose changes inotify sees: one whose every change goes
// through this kernel's VFS, which tells inotify. procfs and sysfs
// entries come and go without an event, network and FUSE filesystems
// change elsewhere, and the layers under an overlay can change without
// the overlay's inodes hearing of it.
func reportsChanges(path string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", path, err)
	}
	switch int64(st.Type) {
	case unix.TMPFS_MAGIC, unix.RAMFS_MAGIC, unix.EXT4_SUPER_MAGIC, // ext2 and ext3 too
		unix.XFS_SUPER_MAGIC, unix.BTRFS_SUPER_MAGIC, unix.F2FS_SUPER_MAGIC:
		return nil
	}
	return fmt.Errorf("%s: %w (type %#x)", path, ErrNotReported, st.Type)
}
