// The gateway's relay outside JavaScript: after login, a door connection's
// two sockets (the client's and the server's) are handed to one thread of
// ours that moves their bytes with epoll, read and write, as PgBouncer does,
// instead of through Node's streams. It keeps what the JavaScript relay
// keeps (src/gateway/relay.ts): where the server's messages end, so that a
// FATAL of the gateway's goes between two of them; the status of the last
// ReadyForQuery and when things started, for the gateway's time limits;
// whether the client sent anything (activity renews sessions). Decisions
// stay in JavaScript: it asks for this state, tells a connection to end
// (with a message), and hears when one has closed.
//
// A Node-API addon: it is built by scripts/build-native.mjs with the
// system's C compiler and nothing else; without it the gateway relays in
// JavaScript.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_SIZE (64 * 1024)
#define CLIENT 0
#define SERVER 1
// How long a connection told to end may take to hand its last bytes to the client.
#define DRAIN_MS 1000.0

typedef struct {
  char *data;
  size_t start, end, cap;
} Pending;

// How a connection ends: the server's side is closed at once; what is queued
// for the client is written; then the client is sent its end (FIN) and what
// it still sends is read and dropped until it closes too, or the drain time
// is up. (Closing a socket with unread input makes the kernel send a reset,
// which can destroy what was just written: the error message saying why.)
enum { RELAYING = 0, DRAINING = 1, CLOSING = 2 };

typedef struct {
  int used;     // the slot holds a connection JavaScript has not released
  int open;     // its sockets are still ours
  int ending;   // RELAYING, DRAINING or CLOSING
  double drainUntil;
  uint64_t generation;
  int fd[2];
  uint32_t events[2];  // what epoll watches on each side now
  Pending out[2];      // bytes waiting to be written to each side
  // The server's messages: a header split across reads, and what is left of the current one.
  unsigned char header[5];
  int have;
  uint32_t remaining;
  int inReady;
  // What the gateway's limits look at.
  int ready;
  char status;
  double busySince, readySince, transactionSince;
  int active;
  napi_threadsafe_function closed;  // JavaScript's word that the connection has closed
} Conn;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static Conn *conns;
static size_t capacity;
static int epfd = -1, wake = -1;
static unsigned char buffer[READ_SIZE];
static int started;
static size_t endingCount;   // open connections that are DRAINING or CLOSING
static uint64_t generations; // one per connection adopted, to tell a slot's tenants apart

static double nowMs(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static uint64_t key(size_t id, int side) { return ((uint64_t)id << 1) | (uint64_t)side; }

static int append(Pending *p, const void *bytes, size_t n) {
  if (n == 0) return 0;
  if (p->start == p->end) p->start = p->end = 0;
  if (p->end + n > p->cap) {
    size_t live = p->end - p->start;
    if (p->start > 0) {
      memmove(p->data, p->data + p->start, live);
      p->start = 0;
      p->end = live;
    }
    if (live + n > p->cap) {
      size_t cap = p->cap ? p->cap : 4096;
      while (cap < live + n) cap *= 2;
      char *grown = realloc(p->data, cap);
      if (!grown) return -1;
      p->data = grown;
      p->cap = cap;
    }
  }
  memcpy(p->data + p->end, bytes, n);
  p->end += n;
  return 0;
}

static void onServerReady(Conn *c, char status) {
  double now = nowMs();
  if (status == 'I') c->transactionSince = 0;
  else if (c->transactionSince == 0) c->transactionSince = c->busySince;
  c->status = status;
  c->ready = 1;
  c->readySince = now;
}

// The server's bytes, read for message boundaries and ReadyForQuery statuses, in place.
static void track(Conn *c, const unsigned char *chunk, size_t n) {
  size_t i = 0;
  while (i < n) {
    if (c->remaining > 0) {
      if (c->inReady) {
        c->inReady = 0;
        onServerReady(c, (char)chunk[i]);
      }
      size_t step = c->remaining < n - i ? c->remaining : n - i;
      c->remaining -= (uint32_t)step;
      i += step;
    } else {
      size_t step = 5 - (size_t)c->have < n - i ? 5 - (size_t)c->have : n - i;
      memcpy(c->header + c->have, chunk + i, step);
      c->have += (int)step;
      i += step;
      if (c->have == 5) {
        c->have = 0;
        uint32_t length = ((uint32_t)c->header[1] << 24) | ((uint32_t)c->header[2] << 16) |
                          ((uint32_t)c->header[3] << 8) | (uint32_t)c->header[4];
        c->remaining = length >= 4 ? length - 4 : 0;
        c->inReady = c->header[0] == 'Z';
      }
    }
  }
}

static int atBoundary(Conn *c) { return c->remaining == 0 && c->have == 0; }

static int queued(const Pending *p) { return p->start != p->end; }

// What epoll should watch on each side. Relaying: reading a side while the
// other has nothing queued (backpressure), writing a side while it has
// bytes queued. Ending: only the client's side is left, read (to drop what
// it sends) and written while bytes are queued for it.
static void watch(size_t id) {
  Conn *c = &conns[id];
  for (int side = 0; side < 2; side++) {
    if (c->fd[side] < 0) continue;
    uint32_t events = 0;
    if (c->ending != RELAYING) {
      events = EPOLLIN | (queued(&c->out[side]) ? EPOLLOUT : 0);
    } else {
      if (!queued(&c->out[1 - side])) events |= EPOLLIN;
      if (queued(&c->out[side])) events |= EPOLLOUT;
    }
    if (events != c->events[side]) {
      struct epoll_event e = {.events = events, .data.u64 = key(id, side)};
      epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd[side], &e);
      c->events[side] = events;
    }
  }
}

static void freePending(Pending *p) {
  free(p->data);
  memset(p, 0, sizeof *p);
}

static void closeSide(Conn *c, int side) {
  if (c->fd[side] < 0) return;
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd[side], NULL);
  close(c->fd[side]);
  c->fd[side] = -1;
  freePending(&c->out[side]);
}

// Reads and drops what a side sends, a bounded amount per call (a client
// sending without pause must not hold the thread): 0 while it is there,
// -1 once it has closed or failed.
static int discard(Conn *c, int side) {
  for (int reads = 0; reads < 16; reads++) {
    ssize_t n = recv(c->fd[side], buffer, READ_SIZE, 0);
    if (n > 0) continue;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    return -1;
  }
  return 0;
}

// Both sockets closed and JavaScript told, once.
static void closeConn(size_t id) {
  Conn *c = &conns[id];
  if (!c->open) return;
  c->open = 0;
  if (c->ending != RELAYING) endingCount--;
  if (c->fd[CLIENT] >= 0) discard(c, CLIENT); // unread input would turn the close into a reset
  closeSide(c, CLIENT);
  closeSide(c, SERVER);
  if (c->closed) {
    napi_call_threadsafe_function(c->closed, (void *)(uintptr_t)(id + 1), napi_tsfn_nonblocking);
    napi_release_threadsafe_function(c->closed, napi_tsfn_release);
    c->closed = NULL;
  } else {
    c->used = 0; // its JavaScript environment is gone: nobody will release the slot
  }
}

// Writes what is queued for one side; -1 when that side is gone.
static int flush(Conn *c, int side) {
  Pending *p = &c->out[side];
  while (p->start < p->end) {
    ssize_t n = send(c->fd[side], p->data + p->start, p->end - p->start, MSG_NOSIGNAL);
    if (n > 0) {
      p->start += (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return 0;
    } else {
      return -1;
    }
  }
  p->start = p->end = 0;
  return 0;
}

// Ending, once the client's queue is written: its end (FIN) goes after it.
static void drained(size_t id) {
  Conn *c = &conns[id];
  if (flush(c, CLIENT) < 0) {
    closeConn(id);
    return;
  }
  if (c->ending == DRAINING && !queued(&c->out[CLIENT])) {
    shutdown(c->fd[CLIENT], SHUT_WR);
    c->ending = CLOSING;
  }
  watch(id);
}

// The server's side closes now (asked for, or the server went); the client's drains.
static void beginEnding(size_t id) {
  Conn *c = &conns[id];
  if (!c->open || c->ending != RELAYING) return;
  c->ending = DRAINING;
  endingCount++;
  c->drainUntil = nowMs() + DRAIN_MS;
  closeSide(c, SERVER);
  drained(id);
}

// A side is gone: the client (everything closes) or the server (its last words drain).
static void gone(size_t id, int side) {
  if (side == CLIENT) closeConn(id);
  else beginEnding(id);
}

// One read from `side`, written on to the other side (what does not fit waits there).
static void pump(size_t id, int side) {
  Conn *c = &conns[id];
  ssize_t n = recv(c->fd[side], buffer, READ_SIZE, 0);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (n <= 0) {
    gone(id, side);
    return;
  }
  if (side == SERVER) {
    track(c, buffer, (size_t)n);
  } else {
    c->active = 1;
    if (c->ready) {
      c->ready = 0;
      c->busySince = nowMs();
    }
  }
  int other = 1 - side;
  Pending *p = &c->out[other];
  size_t written = 0;
  if (!queued(p)) {
    while (written < (size_t)n) {
      ssize_t w = send(c->fd[other], buffer + written, (size_t)n - written, MSG_NOSIGNAL);
      if (w > 0) {
        written += (size_t)w;
      } else if (w < 0 && errno == EINTR) {
        continue;
      } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        break;
      } else {
        gone(id, other);
        return;
      }
    }
  }
  if (written < (size_t)n && append(p, buffer + written, (size_t)n - written) < 0) {
    closeConn(id);
    return;
  }
  watch(id);
}

static void handle(size_t id, int side, uint32_t happened) {
  Conn *c = &conns[id];
  if (happened & EPOLLOUT) {
    if (flush(c, side) < 0) {
      gone(id, side);
      return;
    }
    if (c->ending != RELAYING) {
      drained(id);
      if (!c->open) return;
    } else {
      watch(id);
    }
  }
  if (!(happened & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
  if (c->ending != RELAYING) {
    if (discard(c, CLIENT) < 0) closeConn(id);
  } else if (c->events[side] & EPOLLIN) {
    pump(id, side);
  } else {
    gone(id, side); // a hang-up or an error while its input waits for the other side
  }
}

static void *loop(void *unused) {
  (void)unused;
  struct epoll_event events[64];
  for (;;) {
    pthread_mutex_lock(&lock);
    int timeout = endingCount > 0 ? 100 : -1;
    pthread_mutex_unlock(&lock);
    int n = epoll_wait(epfd, events, 64, timeout);
    pthread_mutex_lock(&lock);
    for (int i = 0; i < n; i++) {
      uint64_t k = events[i].data.u64;
      if (k == UINT64_MAX) {
        uint64_t count;
        if (read(wake, &count, sizeof count) < 0) { /* nothing to read: spurious */ }
        continue; // (a connection began ending: the timeout below now counts)
      }
      size_t id = (size_t)(k >> 1);
      int side = (int)(k & 1);
      // (An event of a connection closed earlier in this batch, or of a slot's earlier tenant.)
      if (id >= capacity || !conns[id].open || conns[id].fd[side] < 0) continue;
      handle(id, side, events[i].events);
    }
    if (endingCount > 0) {
      double now = nowMs();
      for (size_t id = 0; id < capacity; id++) {
        Conn *c = &conns[id];
        if (c->open && c->ending != RELAYING && now > c->drainUntil) closeConn(id);
      }
    }
    pthread_mutex_unlock(&lock);
  }
  return NULL;
}

// ---- Node-API: what JavaScript calls ----

#define CHECK(call)                                      \
  do {                                                   \
    if ((call) != napi_ok) {                             \
      napi_throw_error(env, NULL, "native relay: " #call); \
      return NULL;                                       \
    }                                                    \
  } while (0)

static void callClosed(napi_env env, napi_value callback, void *context, void *data) {
  (void)context;
  if (env == NULL) return;
  napi_value global, id;
  napi_get_global(env, &global);
  napi_create_uint32(env, (uint32_t)((uintptr_t)data - 1), &id);
  napi_call_function(env, global, callback, 1, &id, NULL);
}

// A connection's threadsafe function is gone with its JavaScript environment
// (a worker that ended, the process exiting): never to be called again.
typedef struct {
  size_t id;  // SIZE_MAX until the connection has its slot
  uint64_t generation;
} Tenant;

static void closedFinalized(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  Tenant *tenant = data;
  pthread_mutex_lock(&lock);
  size_t id = tenant->id;
  if (id < capacity && conns[id].generation == tenant->generation) conns[id].closed = NULL;
  pthread_mutex_unlock(&lock);
  free(tenant);
}

// start(): the thread, once per process (every Node environment in it shares it).
static napi_value Start(napi_env env, napi_callback_info info) {
  (void)info;
  pthread_mutex_lock(&lock);
  if (!started) {
    epfd = epoll_create1(EPOLL_CLOEXEC);
    wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
    pthread_t thread;
    if (epfd >= 0 && wake >= 0 && epoll_ctl(epfd, EPOLL_CTL_ADD, wake, &e) == 0 &&
        pthread_create(&thread, NULL, loop, NULL) == 0) {
      pthread_detach(thread);
      started = 1;
    } else {
      if (epfd >= 0) close(epfd);
      if (wake >= 0) close(wake);
      epfd = wake = -1;
    }
  }
  int ok = started;
  pthread_mutex_unlock(&lock);
  if (!ok) napi_throw_error(env, NULL, "native relay: could not start its thread");
  return NULL;
}

static int bytesOf(napi_env env, napi_value value, void **data, size_t *length) {
  return napi_get_buffer_info(env, value, data, length) == napi_ok ? 0 : -1;
}

// adopt(clientFd, serverFd, greeting, fromServer, fromClient, onClosed): the id. The
// descriptors are duplicated (JavaScript then closes its own); `greeting`
// goes to the client first, then `fromServer` (already the server's, so
// read for boundaries), and `fromClient` to the server. `onClosed(id)` is
// called once, when both sockets are closed.
static napi_value Adopt(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6], result, name;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fds[2];
  CHECK(napi_get_value_int32(env, argv[0], &fds[0]));
  CHECK(napi_get_value_int32(env, argv[1], &fds[1]));
  void *bytes[3];
  size_t lengths[3];
  for (int i = 0; i < 3; i++) {
    if (bytesOf(env, argv[2 + i], &bytes[i], &lengths[i]) < 0) {
      napi_throw_type_error(env, NULL, "native relay: adopt() takes three Buffers");
      return NULL;
    }
  }
  napi_threadsafe_function closed;
  Tenant *tenant = malloc(sizeof *tenant);
  if (!tenant) {
    napi_throw_error(env, NULL, "native relay: out of memory");
    return NULL;
  }
  tenant->id = SIZE_MAX;
  tenant->generation = 0;
  CHECK(napi_create_string_utf8(env, "relay closed", NAPI_AUTO_LENGTH, &name));
  if (napi_create_threadsafe_function(env, argv[5], NULL, name, 0, 1, tenant, closedFinalized,
                                      NULL, callClosed, &closed) != napi_ok) {
    free(tenant);
    napi_throw_error(env, NULL, "native relay: could not create its callback");
    return NULL;
  }
  // Nothing of ours keeps Node running: the gateway's own handles do that.
  CHECK(napi_unref_threadsafe_function(env, closed));
  int own[2];
  for (int side = 0; side < 2; side++) {
    own[side] = fcntl(fds[side], F_DUPFD_CLOEXEC, 3);
    if (own[side] < 0 || fcntl(own[side], F_SETFL, fcntl(own[side], F_GETFL) | O_NONBLOCK) < 0) {
      if (own[side] >= 0) close(own[side]);
      if (side == 1) close(own[0]);
      napi_release_threadsafe_function(closed, napi_tsfn_release);
      napi_throw_error(env, NULL, "native relay: could not take over the sockets");
      return NULL;
    }
  }
  pthread_mutex_lock(&lock);
  size_t id = 0;
  while (id < capacity && conns[id].used) id++;
  if (id == capacity) {
    size_t grown = capacity ? capacity * 2 : 64;
    Conn *more = realloc(conns, grown * sizeof(Conn));
    if (!more) {
      pthread_mutex_unlock(&lock);
      close(own[0]);
      close(own[1]);
      napi_release_threadsafe_function(closed, napi_tsfn_release);
      napi_throw_error(env, NULL, "native relay: out of memory");
      return NULL;
    }
    memset(more + capacity, 0, (grown - capacity) * sizeof(Conn));
    conns = more;
    capacity = grown;
  }
  Conn *c = &conns[id];
  memset(c, 0, sizeof *c);
  c->used = c->open = 1;
  c->fd[CLIENT] = own[0];
  c->fd[SERVER] = own[1];
  c->closed = closed;
  c->generation = ++generations;
  tenant->id = id;
  tenant->generation = c->generation;
  double now = nowMs();
  c->ready = 1;
  c->status = 'I';
  c->busySince = c->readySince = now;
  int failed = append(&c->out[CLIENT], bytes[0], lengths[0]) < 0 ||
               append(&c->out[CLIENT], bytes[1], lengths[1]) < 0 ||
               append(&c->out[SERVER], bytes[2], lengths[2]) < 0;
  track(c, bytes[1], lengths[1]);
  if (lengths[2] > 0) {
    c->active = 1;
    c->ready = 0;
  }
  for (int side = 0; side < 2 && !failed; side++) {
    struct epoll_event e = {.events = 0, .data.u64 = key(id, side)};
    failed = epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd[side], &e) < 0;
  }
  if (failed) {
    for (int side = 0; side < 2; side++) {
      epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd[side], NULL);
      close(c->fd[side]);
      freePending(&c->out[side]);
    }
    c->used = c->open = 0;
    pthread_mutex_unlock(&lock);
    napi_release_threadsafe_function(closed, napi_tsfn_release);
    napi_throw_error(env, NULL, "native relay: could not watch the sockets");
    return NULL;
  }
  watch(id);
  pthread_mutex_unlock(&lock);
  CHECK(napi_create_uint32(env, (uint32_t)id, &result));
  return result;
}

static size_t idOf(napi_env env, napi_value value) {
  uint32_t id = UINT32_MAX;
  napi_get_value_uint32(env, value, &id);
  return id;
}

// state(id, takeActive): [ready, status, busy ms ago, ready ms ago,
// transaction ms ago or -1, active], or null once closed. With takeActive,
// the activity flag is reset (the next look sees only what came after).
static napi_value State(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result, item;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  size_t id = idOf(env, argv[0]);
  bool take = false;
  napi_get_value_bool(env, argv[1], &take);
  pthread_mutex_lock(&lock);
  if (id >= capacity || !conns[id].open) {
    pthread_mutex_unlock(&lock);
    napi_get_null(env, &result);
    return result;
  }
  Conn *c = &conns[id];
  double now = nowMs();
  double values[6] = {c->ready, (double)c->status, now - c->busySince, now - c->readySince,
                      c->transactionSince > 0 ? now - c->transactionSince : -1, c->active};
  if (take) c->active = 0;
  pthread_mutex_unlock(&lock);
  CHECK(napi_create_array_with_length(env, 6, &result));
  for (uint32_t i = 0; i < 6; i++) {
    CHECK(napi_create_double(env, values[i], &item));
    CHECK(napi_set_element(env, result, i, item));
  }
  return result;
}

// end(id, message?): the server's side closed now; `message` (a Buffer) goes
// to the client when it falls between two of the server's messages; the
// client's side closes once what is queued for it is written (or a second passed).
static napi_value End(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  size_t id = idOf(env, argv[0]);
  void *bytes = NULL;
  size_t length = 0;
  if (argc > 1) bytesOf(env, argv[1], &bytes, &length);
  pthread_mutex_lock(&lock);
  if (id < capacity && conns[id].open && conns[id].ending == RELAYING) {
    Conn *c = &conns[id];
    if (bytes && atBoundary(c)) append(&c->out[CLIENT], bytes, length);
    // Here and now, as the JavaScript relay does: nothing of the server's
    // may follow the message. (Everything below is the lock's to do.)
    beginEnding(id);
    // The thread learns that it has a drain time to watch.
    uint64_t one = 1;
    if (write(wake, &one, sizeof one) < 0) { /* the counter is full: the thread is awake anyway */ }
  }
  pthread_mutex_unlock(&lock);
  return NULL;
}

// release(id): JavaScript is done with a closed connection; its slot may be reused.
static napi_value Release(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  size_t id = idOf(env, argv[0]);
  pthread_mutex_lock(&lock);
  if (id < capacity && !conns[id].open) conns[id].used = 0;
  pthread_mutex_unlock(&lock);
  return NULL;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
      {"start", NULL, Start, NULL, NULL, NULL, napi_default, NULL},
      {"adopt", NULL, Adopt, NULL, NULL, NULL, napi_default, NULL},
      {"state", NULL, State, NULL, NULL, NULL, napi_default, NULL},
      {"end", NULL, End, NULL, NULL, NULL, napi_default, NULL},
      {"release", NULL, Release, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, 5, methods) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
