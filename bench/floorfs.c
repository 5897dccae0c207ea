/* floorfs: the FUSE floor for bench/run.sh.
 *
 * A minimal low-level FUSE file system that mirrors the tree of a source
 * directory, read once at start into memory, and then answers LOOKUP,
 * GETATTR, OPEN, READ, OPENDIR/READDIR(PLUS) and STATFS from that memory,
 * with the same kernel cache settings artifactfs uses (1 h entry and
 * attribute timeouts, keep_cache and no FLUSH on open). It does no work of
 * its own per request, so a file system that must see every open cannot
 * answer faster than it on the same machine: artifactfs is reported as a
 * ratio of it.
 *
 *   floorfs SOURCE MOUNTPOINT [--threads N]
 *
 * --threads 1 (default) runs libfuse's single-threaded loop; N > 1 the
 * multi-threaded loop with up to N workers, N idle (as artifactfs's
 * fuse.threads). Regular files up to 1 MiB are served with their content;
 * larger ones read as zeros (their size is kept), which is enough for
 * sequential-read figures. Read-only: anything else answers ENOSYS/EROFS.
 *
 * Concurrency: the tree is built before the session starts and never
 * changes; workers only read it, so there are no locks. Nodes are never
 * freed, so FORGET needs no bookkeeping.
 */
#define FUSE_USE_VERSION 314
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_INLINE (1 << 20)
static const double TIMEOUT = 3600.0;

struct node {
  char *name;
  struct stat st;       /* st_ino is the node id */
  char *data;           /* content of a small regular file, else NULL */
  size_t *children;     /* node ids of a directory's entries, sorted by name */
  size_t nchildren;
  size_t parent;
};

static struct node *nodes; /* nodes[0] unused; nodes[1] is the root (FUSE_ROOT_ID) */
static size_t nnodes, capnodes;
static char zeros[1 << 20];

static void die(const char *what, const char *arg) {
  fprintf(stderr, "floorfs: %s %s: %s\n", what, arg, strerror(errno));
  exit(1);
}

static size_t add_node(const char *name, const struct stat *st, size_t parent) {
  if (nnodes == capnodes) {
    capnodes = capnodes ? capnodes * 2 : 1024;
    nodes = realloc(nodes, capnodes * sizeof *nodes);
    if (!nodes) die("out of memory", "");
  }
  size_t id = nnodes++;
  nodes[id] = (struct node){.name = strdup(name), .st = *st, .parent = parent};
  nodes[id].st.st_ino = id;
  return id;
}

static int by_name(const void *a, const void *b) {
  return strcmp(nodes[*(const size_t *)a].name, nodes[*(const size_t *)b].name);
}

/* Mirrors the directory open at `dirfd` below node `id`. */
static void load_dir(int dirfd, size_t id, const char *path) {
  DIR *d = fdopendir(dirfd);
  if (!d) die("cannot read", path);
  size_t cap = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
    struct stat st;
    if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) die("cannot stat", de->d_name);
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) continue;
    size_t child = add_node(de->d_name, &st, id);
    if (nodes[id].nchildren == cap) {
      cap = cap ? cap * 2 : 16;
      nodes[id].children = realloc(nodes[id].children, cap * sizeof(size_t));
    }
    nodes[id].children[nodes[id].nchildren++] = child;
    if (S_ISREG(st.st_mode) && st.st_size <= MAX_INLINE) {
      int fd = openat(dirfd, de->d_name, O_RDONLY | O_CLOEXEC);
      if (fd < 0) die("cannot open", de->d_name);
      char *data = malloc(st.st_size ? st.st_size : 1);
      if (pread(fd, data, st.st_size, 0) != st.st_size) die("cannot read", de->d_name);
      close(fd);
      nodes[child].data = data;
    } else if (S_ISDIR(st.st_mode)) {
      int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (sub < 0) die("cannot open", de->d_name);
      load_dir(sub, child, de->d_name);
    }
  }
  closedir(d);
  qsort(nodes[id].children, nodes[id].nchildren, sizeof(size_t), by_name);
}

static struct node *node_of(fuse_ino_t ino) { return ino >= 1 && ino < nnodes ? &nodes[ino] : NULL; }

static void fill_entry(struct fuse_entry_param *e, size_t id) {
  memset(e, 0, sizeof *e);
  e->ino = id;
  e->generation = 1;
  e->attr = nodes[id].st;
  e->attr_timeout = TIMEOUT;
  e->entry_timeout = TIMEOUT;
}

static void floor_init(void *userdata, struct fuse_conn_info *conn) {
  (void)userdata;
  if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS;
  if (conn->capable & FUSE_CAP_READDIRPLUS_AUTO) conn->want |= FUSE_CAP_READDIRPLUS_AUTO;
  if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
}

static void floor_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  struct node *p = node_of(parent);
  if (!p || !S_ISDIR(p->st.st_mode)) { fuse_reply_err(req, ENOTDIR); return; }
  size_t lo = 0, hi = p->nchildren;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = strcmp(nodes[p->children[mid]].name, name);
    if (c == 0) {
      struct fuse_entry_param e;
      fill_entry(&e, p->children[mid]);
      fuse_reply_entry(req, &e);
      return;
    }
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  fuse_reply_err(req, ENOENT);
}

static void floor_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void)fi;
  struct node *n = node_of(ino);
  if (!n) { fuse_reply_err(req, ENOENT); return; }
  fuse_reply_attr(req, &n->st, TIMEOUT);
}

static void floor_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  struct node *n = node_of(ino);
  if (!n) { fuse_reply_err(req, ENOENT); return; }
  if ((fi->flags & O_ACCMODE) != O_RDONLY) { fuse_reply_err(req, EROFS); return; }
  fi->keep_cache = 1;
  fi->noflush = 1;
  fuse_reply_open(req, fi);
}

static void floor_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  (void)fi;
  struct node *n = node_of(ino);
  if (!n) { fuse_reply_err(req, ENOENT); return; }
  if (off >= n->st.st_size) { fuse_reply_buf(req, NULL, 0); return; }
  size_t len = n->st.st_size - off < (off_t)size ? (size_t)(n->st.st_size - off) : size;
  if (n->data) { fuse_reply_buf(req, n->data + off, len); return; }
  if (len > sizeof zeros) len = sizeof zeros;
  fuse_reply_buf(req, zeros, len);
}

static void reply_dir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, int plus) {
  struct node *n = node_of(ino);
  if (!n || !S_ISDIR(n->st.st_mode)) { fuse_reply_err(req, ENOTDIR); return; }
  char *buf = malloc(size);
  size_t used = 0;
  /* Offsets: 1 ".", 2 "..", 3 + i the i-th child. */
  for (off_t i = off; i < (off_t)n->nchildren + 2; i++) {
    size_t id = i == 0 ? ino : i == 1 ? (n->parent ? n->parent : ino) : n->children[i - 2];
    const char *name = i == 0 ? "." : i == 1 ? ".." : nodes[id].name;
    size_t want;
    if (plus && i >= 2) {
      struct fuse_entry_param e;
      fill_entry(&e, id);
      want = fuse_add_direntry_plus(req, buf + used, size - used, name, &e, i + 1);
    } else if (plus) {
      struct fuse_entry_param e = {.attr = nodes[id].st};  /* ino 0: no lookup count taken */
      e.attr.st_ino = id;
      want = fuse_add_direntry_plus(req, buf + used, size - used, name, &e, i + 1);
    } else {
      want = fuse_add_direntry(req, buf + used, size - used, name, &nodes[id].st, i + 1);
    }
    if (want > size - used) break;
    used += want;
  }
  fuse_reply_buf(req, buf, used);
  free(buf);
}

static void floor_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  (void)fi;
  reply_dir(req, ino, size, off, 0);
}

static void floor_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  (void)fi;
  reply_dir(req, ino, size, off, 1);
}

static void floor_statfs(fuse_req_t req, fuse_ino_t ino) {
  (void)ino;
  struct statvfs sv = {.f_bsize = 4096, .f_frsize = 4096, .f_files = nnodes, .f_namemax = 255};
  fuse_reply_statfs(req, &sv);
}

static const struct fuse_lowlevel_ops floor_ops = {
    .init = floor_init,
    .lookup = floor_lookup,
    .getattr = floor_getattr,
    .open = floor_open,
    .read = floor_read,
    .readdir = floor_readdir,
    .readdirplus = floor_readdirplus,
    .statfs = floor_statfs,
};

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: floorfs SOURCE MOUNTPOINT [--threads N]\n");
    return 2;
  }
  const char *source = argv[1], *mountpoint = argv[2];
  unsigned threads = 1;
  for (int i = 3; i < argc; i++) {
    if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = (unsigned)atoi(argv[++i]);
    else { fprintf(stderr, "floorfs: unknown option %s\n", argv[i]); return 2; }
  }
  if (threads < 1) { fprintf(stderr, "floorfs: --threads must be at least 1\n"); return 2; }

  struct stat st;
  if (stat(source, &st) != 0 || !S_ISDIR(st.st_mode)) die("not a directory:", source);
  add_node("", &st, 0);  /* node 0: never handed out */
  add_node("", &st, 0);  /* node 1: the root */
  int fd = open(source, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) die("cannot open", source);
  load_dir(fd, FUSE_ROOT_ID, source);
  fprintf(stderr, "floorfs: %zu nodes from %s in memory\n", nnodes - 2, source);

  char *fuse_argv[] = {argv[0], "-o", "allow_other,default_permissions,ro,fsname=floorfs,subtype=floorfs", NULL};
  struct fuse_args args = FUSE_ARGS_INIT(3, fuse_argv);
  struct fuse_session *se = fuse_session_new(&args, &floor_ops, sizeof floor_ops, NULL);
  if (!se) return 1;
  int rc = 1;
  if (fuse_set_signal_handlers(se) == 0) {
    if (fuse_session_mount(se, mountpoint) == 0) {
      if (threads == 1) {
        rc = fuse_session_loop(se);
      } else {
        struct fuse_loop_config *loop = fuse_loop_cfg_create();
        fuse_loop_cfg_set_max_threads(loop, threads);
        fuse_loop_cfg_set_idle_threads(loop, threads);
        rc = fuse_session_loop_mt(se, loop);
        fuse_loop_cfg_destroy(loop);
      }
      fuse_session_unmount(se);
    }
    fuse_remove_signal_handlers(se);
  }
  fuse_session_destroy(se);
  fuse_opt_free_args(&args);
  return rc ? 1 : 0;
}
