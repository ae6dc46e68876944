/* stats_cli.c — daemon/stats.c on the command line, for tests/stats_reference.py to compare
 * with SciPy. One request per line on stdin, one answer line per request on stdout, every
 * number printed with %.17g so that nothing is lost in between:
 *   cdf T DF            -> stats_t_cdf
 *   quantile P DF       -> stats_t_quantile
 *   describe X...       -> n mean sd ci_low ci_high
 *   paired N A... B...  -> n mean_diff ci_low ci_high t p   (N values of A, then N of B)
 *   holm P...           -> the adjusted p-values ("nan" is a number here)
 *   median X...         -> the median
 * A request it cannot read ends the program with status 2 and says which line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"

#define MAX_NUMBERS 4096

/* The numbers of a request, after its word. Returns how many, or −1 if one is not a number. */
static int read_numbers(char *text, double *numbers) {
  int count = 0;
  for (;;) {
    while (*text == ' ' || *text == '\t') text++;
    if (*text == '\0' || *text == '\n') return count;
    if (count == MAX_NUMBERS) return -1;
    char *end;
    numbers[count] = strtod(text, &end);
    if (end == text || (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\0')) return -1;
    count++;
    text = end;
  }
}

static void print_numbers(const double *numbers, int count) {
  for (int i = 0; i < count; i++) printf(i ? " %.17g" : "%.17g", numbers[i]);
  printf("\n");
}

static int answer(char *line) {
  static double numbers[MAX_NUMBERS], results[MAX_NUMBERS];
  char *rest = line + strcspn(line, " \t\n");
  size_t word_length = (size_t)(rest - line);
  int count = read_numbers(rest, numbers);
  if (count < 0) return -1;
#define IS(word) (word_length == strlen(word) && strncmp(line, word, word_length) == 0)
  if (IS("cdf") && count == 2) {
    results[0] = stats_t_cdf(numbers[0], numbers[1]);
    print_numbers(results, 1);
  } else if (IS("quantile") && count == 2) {
    results[0] = stats_t_quantile(numbers[0], numbers[1]);
    print_numbers(results, 1);
  } else if (IS("describe")) {
    stats_summary_t summary = stats_describe(numbers, count);
    double fields[] = {summary.n, summary.mean, summary.sd, summary.ci_low, summary.ci_high};
    print_numbers(fields, 5);
  } else if (IS("paired") && count >= 1 && numbers[0] >= 0 && numbers[0] == (int)numbers[0] &&
             count == 1 + 2 * (int)numbers[0]) {
    int n = (int)numbers[0];
    stats_paired_t paired = stats_paired(numbers + 1, numbers + 1 + n, n);
    double fields[] = {paired.n, paired.mean_diff, paired.ci_low, paired.ci_high, paired.t, paired.p};
    print_numbers(fields, 6);
  } else if (IS("holm")) {
    stats_holm(numbers, count, results);
    print_numbers(results, count);
  } else if (IS("median")) {
    results[0] = stats_median(numbers, count);
    print_numbers(results, 1);
  } else {
    return -1;
  }
#undef IS
  return 0;
}

int main(void) {
  char *line = NULL;
  size_t capacity = 0;
  long number = 0;
  while (getline(&line, &capacity, stdin) > 0) {
    number++;
    if (answer(line) != 0) {
      fprintf(stderr, "stats_cli: line %ld: cannot read \"%s\"\n", number, line);
      free(line);
      return 2;
    }
  }
  free(line);
  return 0;
}
