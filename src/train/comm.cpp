#include "train/comm.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"

#ifdef JAMBA_HAVE_MPI
#include <mpi.h>
#endif

namespace jamba {

namespace {

class SingleComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allreduce_sum(float*, size_t) override {}
  void allreduce_sum(double*, size_t) override {}
  void broadcast(int64_t*, size_t) override {}
  void barrier() override {}
  std::string describe() const override { return "1 process"; }
};

#ifdef JAMBA_HAVE_MPI
void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  fail("[mpi] ", what, " failed: ", std::string(msg, size_t(len)));
}

class MpiComm final : public Comm {
 public:
  MpiComm() {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      check_mpi(MPI_Init(nullptr, nullptr), "MPI_Init");
      std::atexit([] {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin) MPI_Finalize();
      });
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    char name[MPI_MAX_PROCESSOR_NAME];
    int len = 0;
    MPI_Get_processor_name(name, &len);
    host_.assign(name, size_t(len));
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // Large buffers go in pieces (MPI counts are int).
  void allreduce_sum(float* data, size_t n) override { reduce(data, n, MPI_FLOAT); }
  void allreduce_sum(double* data, size_t n) override { reduce(data, n, MPI_DOUBLE); }
  void broadcast(int64_t* data, size_t n) override {
    check_mpi(MPI_Bcast(data, int(n), MPI_INT64_T, 0, MPI_COMM_WORLD), "MPI_Bcast");
  }
  void barrier() override { check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }
  std::string describe() const override {
    return "MPI, " + std::to_string(size_) + " ranks (rank 0 on " + host_ + ")";
  }

 private:
  template <typename T>
  void reduce(T* data, size_t n, MPI_Datatype type) {
    constexpr size_t kPiece = size_t(1) << 28;
    for (size_t i = 0; i < n; i += kPiece) {
      const int c = int(std::min(kPiece, n - i));
      check_mpi(MPI_Allreduce(MPI_IN_PLACE, data + i, c, type, MPI_SUM, MPI_COMM_WORLD),
                "MPI_Allreduce");
    }
  }
  int rank_ = 0, size_ = 1;
  std::string host_;
};
#endif

}  // namespace

bool mpi_available() {
#ifdef JAMBA_HAVE_MPI
  return true;
#else
  return false;
#endif
}

bool launched_by_mpi() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE") ||
         std::getenv("PMIX_RANK");
}

std::unique_ptr<Comm> world_comm() {
  if (!launched_by_mpi()) return std::make_unique<SingleComm>();
#ifdef JAMBA_HAVE_MPI
  return std::make_unique<MpiComm>();
#else
  auto env_int = [](const char* name) {
    const char* v = std::getenv(name);
    return v ? std::atoi(v) : 0;
  };
  const int n = std::max(env_int("OMPI_COMM_WORLD_SIZE"), env_int("PMI_SIZE"));
  if (n > 1)
    fail("[mpi] started by an MPI launcher with ", n,
         " processes, but this jamba was built without MPI (install libopenmpi-dev and "
         "rebuild; CMake option JAMBA_MPI)");
  return std::make_unique<SingleComm>();
#endif
}

}  // namespace jamba
