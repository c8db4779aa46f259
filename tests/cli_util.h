// Child-process helpers of the CLI tests: spawn the jamba binary with pipes, feed stdin, collect
// output with a deadline, send signals; plus a deterministic English-like training text.
#pragma once
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

extern char** environ;

namespace jamba::testutil {

// ---------------------------------------------------------------------------------------------
// Child processes.

struct RunResult {
  int rc = -1;          // exit status, or 128 + signal number
  bool signaled = false;
  bool timed_out = false;
  std::string out, err;
};

struct Child {
  pid_t pid = -1;
  int in = -1, out = -1, err = -1;  // our ends of the child's stdin / stdout / stderr
};

// Starts argv[0] (looked up in PATH) with piped stdin/stdout/stderr. SIGPIPE is ignored in this
// process (a child that exits early must not kill the test binary); children get default signal
// dispositions and an empty signal mask.
inline Child spawn(const std::vector<std::string>& args) {
  static const bool sigpipe_ignored = [] {
    ::signal(SIGPIPE, SIG_IGN);
    return true;
  }();
  (void)sigpipe_ignored;
  int pin[2], pout[2], perr[2];
  if (::pipe2(pin, O_CLOEXEC) || ::pipe2(pout, O_CLOEXEC) || ::pipe2(perr, O_CLOEXEC)) {
    ADD_FAILURE() << "pipe2: " << std::strerror(errno);
    return {};
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pin[0], 0);
  posix_spawn_file_actions_adddup2(&fa, pout[1], 1);
  posix_spawn_file_actions_adddup2(&fa, perr[1], 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t def, none;
  sigemptyset(&def);
  sigaddset(&def, SIGPIPE);
  sigaddset(&def, SIGINT);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attr, &def);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  Child c;
  const int e = ::posix_spawnp(&c.pid, argv[0], &fa, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(pin[0]);
  ::close(pout[1]);
  ::close(perr[1]);
  if (e != 0) {
    ADD_FAILURE() << "posix_spawnp " << args[0] << ": " << std::strerror(e);
    ::close(pin[1]);
    ::close(pout[0]);
    ::close(perr[0]);
    return {};
  }
  c.in = pin[1];
  c.out = pout[0];
  c.err = perr[0];
  ::fcntl(c.in, F_SETFL, ::fcntl(c.in, F_GETFL) | O_NONBLOCK);
  return c;
}

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Moves data for up to `seconds`: writes `input` (consumed as it goes) to the child's stdin and
// closes it when empty if `close_in`; appends stdout/stderr to r. Returns when both output pipes
// reached EOF (the child closed them) or the time is up.
inline void pump(Child& c, std::string& input, bool close_in, double seconds, RunResult& r) {
  const double end = now_s() + seconds;
  while (c.out >= 0 || c.err >= 0) {
    if (c.in >= 0 && input.empty() && close_in) {
      ::close(c.in);
      c.in = -1;
    }
    pollfd fds[3];
    int n = 0;
    int* who[3];
    if (c.in >= 0 && !input.empty()) fds[n] = {c.in, POLLOUT, 0}, who[n++] = &c.in;
    if (c.out >= 0) fds[n] = {c.out, POLLIN, 0}, who[n++] = &c.out;
    if (c.err >= 0) fds[n] = {c.err, POLLIN, 0}, who[n++] = &c.err;
    const double left = end - now_s();
    if (left <= 0) return;
    const int k = ::poll(fds, nfds_t(n), int(std::min(left, 1.0) * 1000) + 1);
    if (k < 0 && errno != EINTR) {
      ADD_FAILURE() << "poll: " << std::strerror(errno);
      return;
    }
    for (int i = 0; i < n && k > 0; ++i) {
      if (!fds[i].revents) continue;
      if (who[i] == &c.in) {
        const ssize_t w = ::write(c.in, input.data(), input.size());
        if (w > 0) {
          input.erase(0, size_t(w));
        } else if (w < 0 && errno != EAGAIN && errno != EINTR) {  // EPIPE: the child is gone
          input.clear();
          ::close(c.in);
          c.in = -1;
        }
        continue;
      }
      char buf[65536];
      const ssize_t m = ::read(*who[i], buf, sizeof buf);
      if (m > 0) {
        (who[i] == &c.out ? r.out : r.err).append(buf, size_t(m));
      } else if (m == 0 || (errno != EAGAIN && errno != EINTR)) {
        ::close(*who[i]);
        *who[i] = -1;
      }
    }
  }
}

// Waits for the child (killing it after `seconds`) and fills r.rc / r.signaled / r.timed_out.
inline void finish(Child& c, double seconds, RunResult& r) {
  std::string none;
  pump(c, none, true, seconds, r);
  int status = 0;
  const double end = now_s() + 5;
  pid_t w = 0;
  while ((w = ::waitpid(c.pid, &status, WNOHANG)) == 0 && now_s() < end) ::usleep(10000);
  if (w == 0) {
    r.timed_out = true;
    ::kill(c.pid, SIGKILL);
    ::waitpid(c.pid, &status, 0);
  }
  for (int* fd : {&c.in, &c.out, &c.err})
    if (*fd >= 0) ::close(*fd), *fd = -1;
  if (WIFEXITED(status)) {
    r.rc = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    r.signaled = true;
    r.rc = 128 + WTERMSIG(status);
  }
  if (r.rc == 124) r.timed_out = true;  // timeout(1) ran out
}

// Runs `jamba <args>` through the shell (args are shell words; quote paths with q()), under
// `timeout 120`, feeding `stdin_text`.
inline RunResult run(const std::string& args, const std::string& stdin_text = "") {
  RunResult r;
  Child c = spawn({"/bin/sh", "-c",
                   std::string("exec timeout -k 5 120 '") + JAMBA_BINARY + "' " + args});
  if (c.pid < 0) return r;
  std::string input = stdin_text;
  pump(c, input, true, 130, r);
  finish(c, 5, r);
  return r;
}

inline std::string q(const std::string& s) {  // single-quoted shell word
  std::string o = "'";
  for (char ch : s) o += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return o + "'";
}

inline std::string describe(const RunResult& r) {
  return "rc=" + std::to_string(r.rc) + (r.signaled ? " (signal)" : "") +
         (r.timed_out ? " (timed out)" : "") + "\n--- stdout ---\n" + r.out.substr(0, 4000) +
         "\n--- stderr ---\n" + r.err.substr(0, 4000);
}

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// A failure must be an orderly one: nonzero exit status, no signal, no timeout, a message on
// stderr containing every `parts`.
inline void expect_clean_error(const RunResult& r, const std::vector<std::string>& parts) {
  EXPECT_NE(r.rc, 0) << describe(r);
  EXPECT_FALSE(r.signaled) << describe(r);
  EXPECT_FALSE(r.timed_out) << describe(r);
  EXPECT_LT(r.rc, 128) << describe(r);
  EXPECT_FALSE(r.err.empty()) << describe(r);
  for (const auto& p : parts) EXPECT_TRUE(contains(r.err, p)) << "stderr lacks '" << p << "'\n"
                                                             << describe(r);
}

#define EXPECT_OK(r) EXPECT_EQ((r).rc, 0) << describe(r)
#define ASSERT_OK(r) ASSERT_EQ((r).rc, 0) << describe(r)

// A few KB of varied English (deterministic).
inline std::string training_text() {
  static const char* words[] = {
      "the", "a", "of", "and", "to", "in", "is", "it", "that", "was", "for", "on", "are", "with",
      "as", "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "hot",
      "word", "but", "what", "some", "we", "can", "out", "other", "were", "all", "there", "when",
      "up", "use", "your", "how", "said", "an", "each", "she", "which", "do", "their", "time",
      "if", "will", "way", "about", "many", "then", "them", "write", "would", "like", "so",
      "these", "her", "long", "make", "thing", "see", "him", "two", "has", "look", "more", "day",
      "could", "go", "come", "did", "number", "sound", "no", "most", "people", "my", "over",
      "know", "water", "than", "call", "first", "who", "may", "down", "side", "been", "now",
      "find", "hello", "world", "model", "quick", "brown", "fox", "jumps", "lazy", "dog",
      "river", "mountain", "story", "question", "answer", "machine", "learning", "language",
      "computer", "program", "memory", "state", "layer", "attention", "sequence", "token",
      "morning", "evening", "garden", "window", "market", "village", "teacher", "student",
      "summer", "winter", "yellow", "green", "quietly", "happily", "running", "walking",
      "because", "although", "whenever", "between", "through", "without", "thousand",
      "Jamba", "Mamba", "Python", "London", "Monday", "September", "coffee", "music"};
  const size_t nw = sizeof words / sizeof words[0];
  static const char* punct[] = {".", ".", "!", "?", ",", ";", ":", " -"};
  uint64_t s = 0x9E3779B97F4A7C15ull;
  auto next = [&]() {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return uint32_t(s >> 33);
  };
  std::string text;
  for (int line = 0; line < 600; ++line) {
    const int n = 5 + int(next() % 12);
    for (int i = 0; i < n; ++i) {
      std::string w = words[next() % nw];
      if (i == 0) w[0] = char(std::toupper(static_cast<unsigned char>(w[0])));
      text += w;
      if (next() % 9 == 0) text += punct[next() % 8];
      if (next() % 23 == 0) {
        text += ' ';
        text += std::to_string(next() % 2000);
      }
      text += i + 1 < n ? " " : ".";
    }
    text += "\n";
  }
  text += "Caf\xc3\xa9 na\xc3\xafve r\xc3\xa9sum\xc3\xa9 \xe2\x82\xac 42 (x + y) = z; \"quoted\" 'single'\n";
  return text;
}

}  // namespace jamba::testutil
