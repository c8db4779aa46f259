// Communication between the processes of a data-parallel training run. One process: every
// operation is the identity. Built with MPI (Open MPI from Debian) and started by mpirun: the
// ranks of MPI_COMM_WORLD, each taking its shard of every global batch; gradients and loss sums
// are all-reduced, rank 0 alone writes files and prints.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace jamba {

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place: every rank ends with the elementwise sum over ranks (same value on every rank).
  virtual void allreduce_sum(float* data, size_t n) = 0;
  virtual void allreduce_sum(double* data, size_t n) = 0;
  // Every rank ends with rank 0's value (a decision such as "stop now" after Ctrl-C).
  virtual void broadcast(int64_t* data, size_t n) = 0;
  virtual void barrier() = 0;
  virtual std::string describe() const = 0;  // "1 process" / "MPI, 2 ranks on host1, host2"
  bool is_root() const { return rank() == 0; }
};

// True when this binary was built with MPI support.
bool mpi_available();
// True when the environment says this process was started by an MPI launcher (mpirun /
// mpiexec set OMPI_COMM_WORLD_SIZE or PMI_SIZE / PMIX_RANK).
bool launched_by_mpi();
// The world communicator: MPI when launched_by_mpi() (an error if this binary has no MPI
// support and the launcher asks for more than one process), else the one-process identity.
// MPI is initialised once and finalised at exit.
std::unique_ptr<Comm> world_comm();

}  // namespace jamba
