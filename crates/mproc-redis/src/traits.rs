//! The shared queue traits for the Redis queues.

use std::time::Duration;

use mproc_queue::{
    GetError, JoinableMessageQueue, MessageQueue, PutError, TaskDoneError, Unavailable,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{RedisJoinableQueue, RedisQueue};

macro_rules! redis_message_queue {
    ($ty:ident) => {
        impl<T: Serialize + DeserializeOwned> MessageQueue<T> for $ty<T> {
            fn put(&self, value: T) -> Result<(), PutError<T>> {
                RedisQueue::put(self, value)
            }
            fn try_put(&self, value: T) -> Result<(), PutError<T>> {
                RedisQueue::try_put(self, value)
            }
            fn put_timeout(&self, value: T, timeout: Duration) -> Result<(), PutError<T>> {
                RedisQueue::put_timeout(self, value, timeout)
            }
            fn get(&self) -> Result<T, GetError> {
                RedisQueue::get(self)
            }
            fn try_get(&self) -> Result<T, GetError> {
                RedisQueue::try_get(self)
            }
            fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
                RedisQueue::get_timeout(self, timeout)
            }
            fn close(&self) -> Result<(), Unavailable> {
                RedisQueue::close(self)
            }
            fn is_closed(&self) -> Result<bool, Unavailable> {
                RedisQueue::is_closed(self)
            }
            fn len(&self) -> Result<usize, Unavailable> {
                RedisQueue::len(self)
            }
            fn put_many(&self, values: Vec<T>) -> Result<(), (usize, PutError<T>)> {
                RedisQueue::put_many(self, values)
            }
            fn get_many(&self, out: &mut Vec<T>, max: usize) -> Result<usize, GetError> {
                RedisQueue::get_many(self, out, max)
            }
        }
    };
}

redis_message_queue!(RedisQueue);
redis_message_queue!(RedisJoinableQueue);

impl<T: Serialize + DeserializeOwned> JoinableMessageQueue<T> for RedisJoinableQueue<T> {
    fn task_done(&self) -> Result<(), TaskDoneError> {
        RedisJoinableQueue::task_done(self)
    }
    fn join(&self) -> Result<(), Unavailable> {
        RedisJoinableQueue::join(self)
    }
    fn join_timeout(&self, timeout: Duration) -> Result<bool, Unavailable> {
        RedisJoinableQueue::join_timeout(self, timeout)
    }
    fn unfinished_tasks(&self) -> Result<u64, Unavailable> {
        RedisJoinableQueue::unfinished_tasks(self)
    }
}
