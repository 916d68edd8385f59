/*
** checkpoint_io.h (internal, never installed): the system calls ad_checkpoint_save
** makes, as a table of function pointers, so a test can make each one fail in turn
** and check that the previous checkpoint survives. The library never changes it;
** only tests do, and only while no save is running.
*/
#ifndef AD_CHECKPOINT_IO_H
#define AD_CHECKPOINT_IO_H

#include <sys/types.h>

typedef struct adi_checkpoint_io {
    int (*mkstemp_fn)(char *template_);
    int (*fchmod_fn)(int fd, mode_t mode);
    ssize_t (*write_fn)(int fd, const void *buf, size_t n);
    int (*fsync_fn)(int fd);
    int (*close_fn)(int fd);
    int (*rename_fn)(const char *from, const char *to);
    int (*open_dir_fn)(const char *path); /* opens a folder for reading, for its fsync */
} adi_checkpoint_io;

/* The table in use; starts as the real calls. */
extern adi_checkpoint_io adi_checkpoint_io_hooks_;

/* The real calls, for tests to restore or wrap. */
extern const adi_checkpoint_io adi_checkpoint_io_system_;

#endif /* AD_CHECKPOINT_IO_H */
