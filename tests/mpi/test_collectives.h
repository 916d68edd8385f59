/*
** test_collectives.h: the tests of ad_mpi_new's checks, the small collectives and the
** rank-0 checkpoint (test_collectives.c), run by test_mpi.c's main.
*/
#ifndef MPI_TEST_COLLECTIVES_H
#define MPI_TEST_COLLECTIVES_H

void run_collective_tests(void);

#endif /* MPI_TEST_COLLECTIVES_H */
