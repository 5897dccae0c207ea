/* Load generator for the artifactfs benchmarks (bench/run.sh).
 *
 * One process runs a whole measurement, so figures are not dominated by
 * process start-up. Every mode prints one line of key=value pairs on stdout;
 * run.sh parses it. Times are CLOCK_MONOTONIC.
 *
 *   loadgen openread ROOT LIST [-n PASSES] [-j THREADS]
 *       open(O_RDONLY) + read until EOF (4 KiB buffer) + close of every path
 *       in LIST (one path per line, relative to ROOT), PASSES times.
 *       -> files_per_s
 *   loadgen stat ROOT LIST [-n PASSES] [-j THREADS]
 *       stat() of every path. -> stats_per_s
 *   loadgen seqread FILE... [-b BLOCK]
 *       read each file start to end with BLOCK-byte reads (default 1 MiB).
 *       -> mib_per_s
 *   loadgen readdir DIR [-n REPS] [-l]
 *       opendir + readdir to the end + closedir, REPS times; with -l also
 *       fstatat() every entry (what `ls -l` does). -> listings_per_s, entries_per_s
 *   loadgen mixed ROOT LIST -d SECONDS [-s BIGFILE -S BACKINGFILE]...
 *       one foreground thread does open+read+close of LIST in a loop for
 *       SECONDS and records every latency; for each -s, one background thread
 *       reads BIGFILE sequentially in 1 MiB blocks and, every 8 MiB, drops
 *       the page cache of both BIGFILE and its BACKINGFILE (the file under
 *       the mount), so each of its reads goes to the disk: a slow client.
 *       -> fg_files_per_s, fg_p50_us, fg_p99_us, fg_max_us, bg_mib_per_s
 *   loadgen mktree DIR NDIRS FILES_PER_DIR FILE_SIZE [-j THREADS] [-o OFFSET]
 *       mkdir DIR/aNNNNNN (from OFFSET) and write FILES_PER_DIR files of
 *       FILE_SIZE bytes into each. -> files_per_s
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what, const char *arg) {
  fprintf(stderr, "loadgen: %s %s: %s\n", what, arg ? arg : "", strerror(errno));
  exit(1);
}

/* ---- path lists ---------------------------------------------------------- */

static char **paths;
static size_t npaths;

static void load_list(const char *root, const char *list) {
  FILE *f = fopen(list, "r");
  if (!f) die("cannot open list", list);
  size_t cap = 1024;
  paths = malloc(cap * sizeof *paths);
  char line[4096];
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    if (!line[0]) continue;
    if (npaths == cap) paths = realloc(paths, (cap *= 2) * sizeof *paths);
    size_t len = strlen(root) + strlen(line) + 2;
    paths[npaths] = malloc(len);
    snprintf(paths[npaths], len, "%s/%s", root, line);
    npaths++;
  }
  fclose(f);
  if (!npaths) { fprintf(stderr, "loadgen: empty list %s\n", list); exit(1); }
}

/* ---- openread / stat ----------------------------------------------------- */

struct worker {
  pthread_t thread;
  int index, nthreads, passes, mode; /* mode 0: openread, 1: stat */
  long ops;
  long errors;
};

static void *run_worker(void *arg) {
  struct worker *w = arg;
  char buf[4096];
  struct stat st;
  for (int p = 0; p < w->passes; p++) {
    for (size_t i = w->index; i < npaths; i += w->nthreads) {
      if (w->mode == 1) {
        if (stat(paths[i], &st) != 0) w->errors++;
      } else {
        int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0) { w->errors++; continue; }
        while (read(fd, buf, sizeof buf) > 0) {
        }
        close(fd);
      }
      w->ops++;
    }
  }
  return NULL;
}

static int cmd_files(int mode, int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: loadgen openread|stat ROOT LIST [-n P] [-j T]\n"); return 2; }
  const char *root = argv[0], *list = argv[1];
  int passes = 1, nthreads = 1;
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "-n") && i + 1 < argc) passes = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-j") && i + 1 < argc) nthreads = atoi(argv[++i]);
  }
  load_list(root, list);
  struct worker *w = calloc(nthreads, sizeof *w);
  double t0 = now();
  for (int i = 0; i < nthreads; i++) {
    w[i] = (struct worker){.index = i, .nthreads = nthreads, .passes = passes, .mode = mode};
    pthread_create(&w[i].thread, NULL, run_worker, &w[i]);
  }
  long ops = 0, errors = 0;
  for (int i = 0; i < nthreads; i++) {
    pthread_join(w[i].thread, NULL);
    ops += w[i].ops;
    errors += w[i].errors;
  }
  double dt = now() - t0;
  printf("%s=%.0f ops=%ld errors=%ld seconds=%.4f threads=%d\n", mode == 1 ? "stats_per_s" : "files_per_s",
         ops / dt, ops, errors, dt, nthreads);
  return errors ? 1 : 0;
}

/* ---- seqread -------------------------------------------------------------- */

static int cmd_seqread(int argc, char **argv) {
  size_t block = 1 << 20;
  double t0 = now();
  long long total = 0;
  char *buf = NULL;
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "-b") && i + 1 < argc) { block = strtoul(argv[++i], NULL, 0); continue; }
  }
  buf = aligned_alloc(4096, block);
  t0 = now();
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "-b")) { i++; continue; }
    int fd = open(argv[i], O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("cannot open", argv[i]);
    ssize_t n;
    while ((n = read(fd, buf, block)) > 0) total += n;
    if (n < 0) die("read", argv[i]);
    close(fd);
  }
  double dt = now() - t0;
  printf("mib_per_s=%.1f bytes=%lld seconds=%.4f block=%zu\n", total / dt / 1048576.0, total, dt, block);
  return 0;
}

/* ---- readdir -------------------------------------------------------------- */

static int cmd_readdir(int argc, char **argv) {
  if (argc < 1) { fprintf(stderr, "usage: loadgen readdir DIR [-n REPS] [-l]\n"); return 2; }
  const char *dir = argv[0];
  int reps = 1, with_stat = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-n") && i + 1 < argc) reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-l")) with_stat = 1;
  }
  long entries = 0;
  struct stat st;
  double t0 = now();
  for (int r = 0; r < reps; r++) {
    DIR *d = opendir(dir);
    if (!d) die("opendir", dir);
    struct dirent *de;
    while ((de = readdir(d))) {
      entries++;
      if (with_stat && fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) die("fstatat", de->d_name);
    }
    closedir(d);
  }
  double dt = now() - t0;
  printf("listings_per_s=%.2f entries_per_s=%.0f entries=%ld seconds=%.4f\n", reps / dt, entries / dt, entries / reps,
         dt);
  return 0;
}

/* ---- mixed: small-file latency while a slow client reads ------------------ */

static volatile int stop_flag;

struct slow {
  pthread_t thread;
  const char *file, *backing;
  long long bytes;
};

static void *run_slow(void *arg) {
  struct slow *s = arg;
  size_t block = 1 << 20;
  char *buf = aligned_alloc(4096, block);
  int bfd = open(s->backing, O_RDONLY | O_CLOEXEC);
  if (bfd < 0) die("cannot open", s->backing);
  while (!stop_flag) {
    int fd = open(s->file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("cannot open", s->file);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    posix_fadvise(bfd, 0, 0, POSIX_FADV_DONTNEED);
    ssize_t n;
    off_t off = 0;
    while (!stop_flag && (n = pread(fd, buf, block, off)) > 0) {
      off += n;
      s->bytes += n;
      if (off % (8 << 20) == 0) {
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        posix_fadvise(bfd, 0, 0, POSIX_FADV_DONTNEED);
      }
    }
    close(fd);
  }
  close(bfd);
  return NULL;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int cmd_mixed(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: loadgen mixed ROOT LIST -d SECONDS [-s FILE -S BACKING]...\n"); return 2; }
  load_list(argv[0], argv[1]);
  double seconds = 5;
  struct slow slows[16];
  int nslow = 0;
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "-d") && i + 1 < argc) seconds = atof(argv[++i]);
    else if (!strcmp(argv[i], "-s") && i + 1 < argc && nslow < 16) slows[nslow++] = (struct slow){.file = argv[++i]};
    else if (!strcmp(argv[i], "-S") && i + 1 < argc && nslow > 0) slows[nslow - 1].backing = argv[++i];
  }
  for (int i = 0; i < nslow; i++) {
    if (!slows[i].backing) slows[i].backing = slows[i].file;
    pthread_create(&slows[i].thread, NULL, run_slow, &slows[i]);
  }
  usleep(200000); /* let the slow clients get going */
  size_t cap = 1 << 20, n = 0;
  double *lat = malloc(cap * sizeof *lat);
  char buf[4096];
  long errors = 0;
  long long bg_before = 0;
  for (int i = 0; i < nslow; i++) bg_before += slows[i].bytes;
  double t0 = now(), end = t0 + seconds, t = t0;
  for (size_t i = 0; t < end; i = (i + 1) % npaths) {
    double a = now();
    int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
    if (fd < 0) errors++;
    else {
      while (read(fd, buf, sizeof buf) > 0) {
      }
      close(fd);
    }
    t = now();
    if (n == cap) lat = realloc(lat, (cap *= 2) * sizeof *lat);
    lat[n++] = t - a;
  }
  double dt = t - t0;
  long long bg = -bg_before;
  for (int i = 0; i < nslow; i++) bg += slows[i].bytes;
  stop_flag = 1;
  for (int i = 0; i < nslow; i++) pthread_join(slows[i].thread, NULL);
  qsort(lat, n, sizeof *lat, cmp_double);
  printf("fg_files_per_s=%.0f fg_p50_us=%.1f fg_p99_us=%.1f fg_max_us=%.1f bg_mib_per_s=%.1f ops=%zu errors=%ld "
         "seconds=%.3f slow_clients=%d\n",
         n / dt, lat[n / 2] * 1e6, lat[(size_t)(n * 0.99)] * 1e6, lat[n - 1] * 1e6, bg / dt / 1048576.0, n, errors,
         dt, nslow);
  return errors ? 1 : 0;
}

/* ---- mktree --------------------------------------------------------------- */

struct maker {
  pthread_t thread;
  const char *dir;
  int index, nthreads, ndirs, nfiles, offset;
  size_t size;
  long files;
};

static void *run_maker(void *arg) {
  struct maker *m = arg;
  char *data = malloc(m->size ? m->size : 1);
  memset(data, 'x', m->size);
  char path[4096];
  for (int d = m->index; d < m->ndirs; d += m->nthreads) {
    snprintf(path, sizeof path, "%s/a%06d", m->dir, m->offset + d);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) die("mkdir", path);
    for (int f = 0; f < m->nfiles; f++) {
      snprintf(path, sizeof path, "%s/a%06d/f%03d", m->dir, m->offset + d, f);
      int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) die("create", path);
      if (m->size && write(fd, data, m->size) != (ssize_t)m->size) die("write", path);
      if (close(fd) != 0) die("close", path);
      m->files++;
    }
  }
  free(data);
  return NULL;
}

static int cmd_mktree(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: loadgen mktree DIR NDIRS FILES SIZE [-j T] [-o OFFSET]\n"); return 2; }
  int nthreads = 1, offset = 0;
  for (int i = 4; i < argc; i++) {
    if (!strcmp(argv[i], "-j") && i + 1 < argc) nthreads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-o") && i + 1 < argc) offset = atoi(argv[++i]);
  }
  struct maker *m = calloc(nthreads, sizeof *m);
  double t0 = now();
  for (int i = 0; i < nthreads; i++) {
    m[i] = (struct maker){.dir = argv[0], .index = i, .nthreads = nthreads, .ndirs = atoi(argv[1]),
                          .nfiles = atoi(argv[2]), .offset = offset, .size = strtoul(argv[3], NULL, 0)};
    pthread_create(&m[i].thread, NULL, run_maker, &m[i]);
  }
  long files = 0;
  for (int i = 0; i < nthreads; i++) {
    pthread_join(m[i].thread, NULL);
    files += m[i].files;
  }
  double dt = now() - t0;
  printf("files_per_s=%.0f files=%ld seconds=%.4f\n", files / dt, files, dt);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: loadgen openread|stat|seqread|readdir|mixed|mktree ... (see the source)\n");
    return 2;
  }
  const char *mode = argv[1];
  if (!strcmp(mode, "openread")) return cmd_files(0, argc - 2, argv + 2);
  if (!strcmp(mode, "stat")) return cmd_files(1, argc - 2, argv + 2);
  if (!strcmp(mode, "seqread")) return cmd_seqread(argc - 2, argv + 2);
  if (!strcmp(mode, "readdir")) return cmd_readdir(argc - 2, argv + 2);
  if (!strcmp(mode, "mixed")) return cmd_mixed(argc - 2, argv + 2);
  if (!strcmp(mode, "mktree")) return cmd_mktree(argc - 2, argv + 2);
  fprintf(stderr, "loadgen: unknown mode %s\n", mode);
  return 2;
}
