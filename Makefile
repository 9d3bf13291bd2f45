# chronicle: development build. Users install with the rockspec (see README).
LUA_VERSION ?= 5.4
LUA_INC ?= /usr/include/lua$(LUA_VERSION)
CC ?= cc
CFLAGS ?= -O2 -g
WARN = -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE
LIBS = -llmdb -lmsgpackc -lxxhash -lpthread
SRC = $(wildcard csrc/*.c)
HDR = $(wildcard csrc/*.h)
BUILD = build
SO = $(BUILD)/chronicle/core.so

.PHONY: all build test demo check clean deps

all: build
build: $(SO)

$(SO): $(SRC) $(HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -fPIC -shared -I$(LUA_INC) $(SRC) -o $@ $(LIBS)

clean:
	rm -rf $(BUILD)
