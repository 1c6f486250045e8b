/* transport_mpi.h: the MPI communicators behind the transports, for MPI-aware code (the NCCL
 * transport, the daemon's safety rank channel). Only in the library ts_transport_mpi. */
#ifndef TS_TRANSPORT_MPI_H
#define TS_TRANSPORT_MPI_H

#include <mpi.h>

/* The transports' world: MPI_COMM_WORLD, or after ts_transport_mpi_set_aside (transport.h)
 * the engine ranks (every rank but the one set aside, in world order). */
MPI_Comm ts_transport_mpi_engine_world(void);
/* After ts_transport_mpi_set_aside, on world rank 0 and the rank set aside: their own
 * two-rank communicator (world rank 0 is its rank 0); MPI_COMM_NULL otherwise. */
MPI_Comm ts_transport_mpi_side_comm(void);

#endif
